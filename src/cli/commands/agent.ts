import { defineCommand } from "citty";
import { isNotFound, jsonArg, serverArgs, unknownAgent, withServer } from "../errors";
import { line, note, printFields, printJson, printTable, style, timeAgo } from "../output";

const list = defineCommand({
  meta: { name: "list", description: "List deployed agents" },
  args: { ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const agents = await client.listAgents();
      if (args.json) return printJson(agents);
      if (agents.length === 0) {
        note("No agents are deployed yet; deploy one with `ash deploy <folder>`.");
        return;
      }
      printTable(
        ["NAME", "VERSION", "UPDATED", "ENV"],
        agents.map((a) => [a.name, String(a.version), timeAgo(a.updatedAt), Object.keys(a.env ?? {}).join(" ")]),
      );
    }),
});

const info = defineCommand({
  meta: { name: "info", description: "Show one agent" },
  args: { name: { type: "positional", description: "Agent name", required: true }, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      const agent = await client.getAgent(args.name).catch(async (error) => {
        throw isNotFound(error) ? await unknownAgent(client, args.name) : error;
      });
      if (args.json) return printJson(agent);
      const env = Object.keys(agent.env ?? {});
      printFields([
        ["Name", agent.name],
        ["Version", agent.version],
        ["Id", agent.id],
        ["Created", `${agent.createdAt} (${timeAgo(agent.createdAt)})`],
        ["Updated", `${agent.updatedAt} (${timeAgo(agent.updatedAt)})`],
        ["Env", env.length > 0 ? env.join(", ") : style.dim("none")],
      ]);
    }),
});

const remove = defineCommand({
  meta: { name: "delete", description: "Delete an agent (its sessions keep their history)" },
  args: { name: { type: "positional", description: "Agent name", required: true }, ...serverArgs, ...jsonArg },
  run: ({ args }) =>
    withServer(args, async ({ client }) => {
      await client.deleteAgent(args.name).catch(async (error) => {
        throw isNotFound(error) ? await unknownAgent(client, args.name) : error;
      });
      if (args.json) return printJson({ deleted: args.name });
      line(`Deleted agent ${style.bold(args.name)}.`);
    }),
});

export default defineCommand({
  meta: { name: "agent", description: "List, inspect and delete deployed agents" },
  subCommands: { list, info, delete: remove },
});
