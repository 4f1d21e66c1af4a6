/**
 * Ash for Testcontainers (`@ash-ai/cli/testcontainers`): a real Ash server in a
 * throw-away container for integration tests.
 *
 *   const ash = await new AshContainer()
 *     .withAnthropicApiKey(process.env.ANTHROPIC_API_KEY!)
 *     .withAgent("support", "./agents/support")
 *     .start();
 *   const session = await ash.getClient().createSession({ agent: "support" });
 *   ...
 *   await ash.stop();
 *
 * The container gets the same isolation options as `ash start` (named
 * capabilities, seccomp/apparmor, host cgroup namespace, writable cgroups), taken
 * from the shared run spec, so sandboxes behave as they do in production.
 */
import { AbstractStartedContainer, GenericContainer, type StartedTestContainer, Wait } from "testcontainers";
import { readAgentFolder } from "../agents/local-folder";
import { AshClient } from "../client/client";
import { AGENT_NAME } from "../contract";
import type { Agent } from "../client/types";
import { CONTAINER_PORT, defaultImage, isolationOptions } from "../runspec/run-spec";
import { generateSecret } from "../runspec/dotenv";


export class AshContainer extends GenericContainer {
  private apiKey = `ash_test_${generateSecret()}`;
  private readonly agents: { name: string; folder: string }[] = [];

  /** @param image the Ash image; defaults to the one `ash start` runs for this version. */
  constructor(image: string = defaultImage()) {
    super(image);
    this.withExposedPorts(CONTAINER_PORT);
    this.withWaitStrategy(Wait.forHttp("/health", CONTAINER_PORT).forStatusCode(200));
    this.withStartupTimeout(120_000);
    this.withLabels({ "ai.ash.role": "server", "ai.ash.testcontainers": "true" });
    const { hostConfig } = isolationOptions();
    for (const [key, value] of Object.entries(hostConfig)) {
      if (key === "CapAdd") this.withAddedCapabilities(...(value as string[]));
      else if (key === "SecurityOpt") this.withSecurityOpt(...(value as string[]));
      else (this.hostConfig as Record<string, unknown>)[key] = structuredClone(value);
    }
  }

  /** The API key the server requires (`ASH_API_KEY`); a random one is used when not set. */
  withApiKey(apiKey: string): this {
    if (typeof apiKey !== "string" || apiKey.length < 8) throw new TypeError("withApiKey: the key must be at least 8 characters long");
    this.apiKey = apiKey;
    return this;
  }

  /** The model key agents use (`ANTHROPIC_API_KEY`). */
  withAnthropicApiKey(apiKey: string): this {
    return this.withEnvironment({ ANTHROPIC_API_KEY: apiKey });
  }

  /** Where agents send model requests (`ANTHROPIC_BASE_URL`), e.g. a proxy or a fake model the container can reach. */
  withAnthropicBaseUrl(url: string): this {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError(`withAnthropicBaseUrl: "${url}" is not a URL`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new TypeError(`withAnthropicBaseUrl: "${url}" is not an http(s) URL`);
    return this.withEnvironment({ ANTHROPIC_BASE_URL: url });
  }

  /** An agent folder (with `CLAUDE.md`) on this machine, deployed as `name` once the server is up. */
  withAgent(name: string, localFolder: string): this {
    if (!AGENT_NAME.test(name)) throw new TypeError(`withAgent: "${name}" is not an agent name (letters, digits, _ and -, at most 64)`);
    this.agents.push({ name, folder: localFolder });
    return this;
  }

  override async start(): Promise<StartedAshContainer> {
    // Read the folders first: a missing CLAUDE.md should fail before a container exists.
    const folders = await Promise.all(this.agents.map(async (agent) => ({ name: agent.name, folder: await readAgentFolder(agent.folder) })));
    this.withEnvironment({ ASH_API_KEY: this.apiKey });
    // Added last so a withBindMounts() call by the user does not drop it.
    const binds = new Set([...(this.hostConfig.Binds ?? []), ...isolationOptions().binds]);
    this.hostConfig.Binds = [...binds];

    const started = new StartedAshContainer(await super.start(), this.apiKey);
    try {
      for (const { name, folder } of folders) {
        const env = Object.keys(folder.env).length > 0 ? folder.env : undefined;
        started.agents.push(await started.getClient().deployAgent({ name, files: folder.files, env }));
      }
    } catch (error) {
      await started.stop().catch(() => {});
      throw error;
    }
    return started;
  }
}

export class StartedAshContainer extends AbstractStartedContainer {
  /** The agents deployed by `withAgent`, as the server answered. */
  readonly agents: Agent[] = [];

  constructor(
    startedTestContainer: StartedTestContainer,
    private readonly apiKey: string,
  ) {
    super(startedTestContainer);
  }

  /** The server's address on this machine, e.g. `http://127.0.0.1:32768`. */
  getUrl(): string {
    return `http://${this.getHost()}:${this.getMappedPort(CONTAINER_PORT)}`;
  }

  getApiKey(): string {
    return this.apiKey;
  }

  /** A typed client for this server, with its key. */
  getClient(): AshClient {
    return new AshClient({ url: this.getUrl(), apiKey: this.apiKey });
  }
}
