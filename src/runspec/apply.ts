import type Docker from "dockerode";
import { type RunSpec, toCreateOptions } from "./run-spec";

/**
 * Creates and starts the container a spec describes. If it cannot start (a busy
 * port, a bad bind), the half-made container is removed again so a failed
 * `ash start` leaves nothing behind, and the Docker error is rethrown.
 */
export async function applyRunSpec(docker: Docker, spec: RunSpec): Promise<Docker.Container> {
  const container = await docker.createContainer(toCreateOptions(spec));
  try {
    await container.start();
  } catch (error) {
    await container.remove({ force: true }).catch(() => {});
    throw error;
  }
  return container;
}
