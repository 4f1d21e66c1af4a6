import { runAsh } from "./app";
import { exitWith } from "./output";

// The `ash` binary: one command line, one exit code.
void runAsh(process.argv.slice(2)).then(exitWith);
