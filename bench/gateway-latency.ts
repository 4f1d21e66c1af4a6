// Time to the first byte of a streamed Messages answer: through the model
// gateway (token check, key swap, usage tap) against the same fake model
// called directly, interleaved in the same run.
//
//   npx tsx bench/gateway-latency.ts [requests=400]
import { request, Agent } from "node:http";
import { createServer } from "node:net";
import { ModelGateway } from "../src/gateway/gateway";
import { startFakeModel } from "../tests/fake-model/fake-model.mjs";
import { row } from "./stats";

const count = Number(process.argv[2] ?? 400);
const model = await startFakeModel();
let usageSeen = 0;
const gateway = new ModelGateway({ usage: () => usageSeen++ });
const { token } = gateway.issue({ sandboxId: "bench", agentName: "bench", upstream: { baseUrl: model.url, apiKey: "sk-ant-bench", keyId: "server" } });
const front = createServer({ noDelay: true }, (socket) => gateway.accept(socket));
await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", () => resolve()));
const gatewayPort = (front.address() as { port: number }).port;

const body = JSON.stringify({ model: "fake", max_tokens: 64, stream: true, messages: [{ role: "user", content: "hello there" }] });
const agent = new Agent({ keepAlive: true });

function firstByte(port: number, key: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request(
      { host: "127.0.0.1", port, method: "POST", path: "/v1/messages", agent, headers: { "content-type": "application/json", "x-api-key": key, "content-length": Buffer.byteLength(body) } },
      (res) => {
        let first = NaN;
        res.on("data", () => {
          if (Number.isNaN(first)) first = performance.now() - started;
        });
        res.on("end", () => resolve(first));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const direct: number[] = [];
const viaGateway: number[] = [];
for (let i = 0; i < 20; i++) {
  await firstByte(model.port, "sk-ant-bench");
  await firstByte(gatewayPort, token);
}
for (let i = 0; i < count; i++) {
  direct.push(await firstByte(model.port, "sk-ant-bench"));
  viaGateway.push(await firstByte(gatewayPort, token));
}
const added = viaGateway.map((ms, i) => ms - direct[i]!);
console.log(`model gateway, first byte of a streamed answer, ${new Date().toISOString()}, node ${process.version}`);
console.log(row("direct to the fake model", direct));
console.log(row("through the gateway", viaGateway));
console.log(row("added by the gateway (pairwise)", added));
console.log(`usage reports read: ${usageSeen}`);
front.close();
gateway.close();
agent.destroy();
await model.close();
