// The per-session snapshot store (formats 1 and 2) lives in src/snapshots;
// kept here under its old name for the code that imports it from here.
export * from "../snapshots/legacy";
