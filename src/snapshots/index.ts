// Workspace versions: immutable, content-addressed snapshots of a workspace
// in one store shared by every session (format 3), and the per-session
// snapshots of formats 1 and 2 that are still read.
export { createVersionStore, type VersionSaveOptions, type VersionStore, type VersionStoreTuning, type WorkspaceVersion } from "./store";
export {
  createSnapshotStore,
  SnapshotCorruptError,
  SnapshotTooLargeError,
  type S3SnapshotOptions,
  type SnapshotInfo,
  type SnapshotListEntry,
  type SnapshotStore,
  type SnapshotStoreOptions,
} from "./legacy";
export { isObjectKey } from "./objects";
