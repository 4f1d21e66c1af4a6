import { defineCommand } from "citty";
import { containerName } from "../../runspec";
import { connectDocker, findAshContainer } from "../docker";
import { line, note, style } from "../output";

const args = {} as const;

export default defineCommand({
  meta: { name: "stop", description: "Stop and remove the Ash server container (the data folder is kept)" },
  args,
  run: async () => {
    const docker = await connectDocker();
    const found = await findAshContainer(docker);
    if (!found) {
      line(`Ash is not running (there is no ${containerName()} container).`);
      return 0;
    }
    const dataDir = found.info.Config.Labels?.["ai.ash.data-dir"];
    if (found.info.State.Running) {
      note(style.dim("Stopping the server…", process.stderr));
      // The server gets SIGTERM (through tini) and 20 s to persist sessions before SIGKILL.
      await found.container.stop({ t: 20 }).catch((error: any) => {
        if (error?.statusCode !== 304) throw error; // 304: it stopped meanwhile.
      });
    }
    await found.container.remove({ force: true });
    line(`Ash stopped; the container is removed${dataDir ? ` and your data stays in ${dataDir}` : ""}.`);
    return 0;
  },
});
