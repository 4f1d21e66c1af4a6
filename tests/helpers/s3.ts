// The S3 test server (s3rver) on 127.0.0.1 with one bucket, and the server
// settings that put a server's snapshot store in it.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
// @ts-expect-error s3rver ships no type declarations
import S3rver from "s3rver";

export interface TestBucket {
  /** Where s3rver keeps the objects (each as `<key>._S3rver_object`). */
  dir: string;
  /** ASH_SNAPSHOT_STORE and friends: every server given these shares the bucket. */
  env: Record<string, string>;
  close(): Promise<void>;
}

export async function startTestBucket(name = "ash", prefix = "snapshots"): Promise<TestBucket> {
  const dir = mkdtempSync(join(tmpdir(), "ash-s3-"));
  const server = new S3rver({ port: 0, address: "127.0.0.1", directory: dir, silent: true, configureBuckets: [{ name }] });
  const { port } = await server.run();
  return {
    dir,
    env: {
      ASH_SNAPSHOT_STORE: `s3://${name}/${prefix}`,
      ASH_S3_ENDPOINT: `http://127.0.0.1:${port}`,
      AWS_ACCESS_KEY_ID: "S3RVER",
      AWS_SECRET_ACCESS_KEY: "S3RVER",
    },
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
