// Saves a folder into a version store and prints the version as JSON: a
// separate process, so a test can kill it with SIGKILL in the middle of a save.
//   node --import tsx tests/helpers/save-version.ts <dataDir> <folder> [base]
import { createVersionStore } from "../../src/snapshots";
import { trustedFolderIo } from "../../src/sandbox/workspace-io";

const [dataDir, folder, base] = process.argv.slice(2);
const store = createVersionStore({ dataDir: dataDir! });
const version = await store.save(trustedFolderIo(folder!), { base: base || null });
process.stdout.write(JSON.stringify({ id: version.id }));
