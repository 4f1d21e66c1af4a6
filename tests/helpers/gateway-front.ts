import { createServer, type Socket } from "node:net";
import type { ModelGateway } from "../../src/gateway/gateway";

/** Serves a model gateway on a loopback port (as a sandbox's socket would), token alone deciding. */
export async function serveGateway(gateway: ModelGateway): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const front = createServer((socket) => {
    sockets.add(socket);
    gateway.accept(socket);
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", () => resolve()));
  return {
    url: `http://127.0.0.1:${(front.address() as { port: number }).port}`,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => front.close(resolve));
    },
  };
}
