import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import pkg from "../../package.json" with { type: "json" };
import { SHUTDOWN_LIMIT_MS } from "../../src/config";
import { buildKubernetes, parseEnvAssignment, PRESTOP_SECONDS, renderKubernetes, type KubeOptions } from "../../src/runspec";
import { skipUnlessReady } from "../helpers/requirements";
import { KUBE_REFERENCES } from "../helpers/kube-references";

const root = join(import.meta.dirname, "../..");
type Obj = Record<string, any>;

function objects(options: KubeOptions): Obj[] {
  return buildKubernetes(options).objects as Obj[];
}
const find = (list: Obj[], kind: string, name?: string) => list.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
const server = (list: Obj[]) => find(list, "Deployment", "ash")!;
const container = (list: Obj[]) => server(list).spec.template.spec.containers[0];
// Every pod tells the others where to forward requests for the sessions it owns: its own IP.
const ADVERTISE = [
  { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
  { name: "ASH_ADVERTISE_URL", value: "http://$(POD_IP):4100" },
];

describe("buildKubernetes: what every variant has", () => {
  for (const [name, options] of Object.entries(KUBE_REFERENCES)) {
    const list = objects(options);

    it(`(${name}) a namespace that admits the server, its ConfigMap, Deployment, Service, PodDisruptionBudget and NetworkPolicy, all in that namespace`, () => {
      expect(list[0]).toMatchObject({ kind: "Namespace", metadata: { name: "ash", labels: { "pod-security.kubernetes.io/enforce": "privileged" } } });
      for (const kind of ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"]) expect(find(list, kind, "ash"), kind).toBeDefined();
      for (const object of list.slice(1)) expect(object.metadata.namespace).toBe("ash");
      for (const object of list) expect(object.metadata.labels["app.kubernetes.io/version"]).toBe(pkg.version);
      // The Secret is never part of the manifest file.
      expect(find(list, "Secret")).toBeUndefined();
    });

    it(`(${name}) runs the server with SYS_ADMIN and unconfined seccomp/AppArmor, never privileged, and no host paths`, () => {
      const c = container(list);
      expect(c.securityContext).toEqual({
        privileged: false,
        capabilities: { add: ["SYS_ADMIN"] },
        seccompProfile: { type: "Unconfined" },
        appArmorProfile: { type: "Unconfined" },
      });
      const pod = server(list).spec.template.spec;
      expect(pod.shareProcessNamespace).toBe(true);
      expect(pod.automountServiceAccountToken).toBe(false);
      expect(JSON.stringify(list)).not.toMatch(/hostPath|hostNetwork|hostPID|"privileged":true/);
    });

    it(`(${name}) turns off service links, which would set ASH_PORT=tcp://... from the Service named ash`, () => {
      expect(server(list).spec.template.spec.enableServiceLinks).toBe(false);
      expect(find(list, "Service", "ash")!.spec.ports).toEqual([{ name: "http", port: 4100, targetPort: "http", protocol: "TCP" }]);
    });

    it(`(${name}) is ready on /health/ready, alive on /health/live, and drains within the grace period`, () => {
      const c = container(list);
      expect(c.readinessProbe.httpGet).toEqual({ path: "/health/ready", port: "http" });
      expect(c.startupProbe.httpGet).toEqual({ path: "/health", port: "http" });
      // A database outage (503 on /health and /health/ready) must not restart the servers.
      expect(c.livenessProbe.httpGet).toEqual({ path: "/health/live", port: "http" });
      // The start-up probe outlasts the server's wait for its database (120 s by default).
      expect(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold).toBeGreaterThan(120);
      expect(c.lifecycle.preStop.exec.command).toEqual(["sleep", String(PRESTOP_SECONDS)]);
      const grace = server(list).spec.template.spec.terminationGracePeriodSeconds;
      expect(grace).toBeGreaterThan(PRESTOP_SECONDS + SHUTDOWN_LIMIT_MS / 1000);
    });

    it(`(${name}) reads settings from the ConfigMap and secrets from the Secret, the Secret last (it wins)`, () => {
      expect(container(list).envFrom).toEqual([{ configMapRef: { name: "ash" } }, { secretRef: { name: "ash" } }]);
      const data = find(list, "ConfigMap", "ash")!.data;
      expect(data.ASH_MAX_SANDBOXES).toBe("200");
      expect(JSON.stringify(data)).not.toMatch(/API_KEY|PASSWORD|SECRET/);
    });

    it(`(${name}) lets drains take one server at a time and opens only the API port, to the cluster and to the other servers`, () => {
      expect(find(list, "PodDisruptionBudget")!.spec.maxUnavailable).toBe(1);
      const policy = find(list, "NetworkPolicy", "ash")!.spec;
      expect(policy).toMatchObject({ policyTypes: ["Ingress"], ingress: [{ ports: [{ port: 4100, protocol: "TCP" }] }, { ports: [{ port: 4100, protocol: "TCP" }] }] });
      // The second rule stays when the first is narrowed: servers forward to each other on the API port.
      expect(policy.ingress[1].from).toEqual([{ podSelector: { matchLabels: { "app.kubernetes.io/name": "ash", "app.kubernetes.io/component": "server" } } }]);
    });

    it(`(${name}) advertises each pod at its own IP and the container's port, for requests forwarded to the session's owner`, () => {
      const c = container(list);
      expect(c.env.slice(0, 2)).toEqual(ADVERTISE);
      expect(c.ports).toEqual([{ name: "http", containerPort: 4100, protocol: "TCP" }]);
      // The shared secret that signs forwarded requests is generated into the Secret, never the manifests.
      expect(buildKubernetes(options).secret.generate).toContain("ASH_CLUSTER_SECRET");
      expect(JSON.stringify(list)).not.toMatch(/ASH_CLUSTER_SECRET"/);
    });
  }
});

describe("buildKubernetes: databases and storage", () => {
  it("with --database-url: no database objects, the URL only in the Secret", () => {
    const { objects: list, secret } = buildKubernetes({ databaseUrl: "postgresql://ash:pw@db.internal:26257/ash?sslmode=verify-full" });
    expect(list.filter((o) => o.kind === "StatefulSet")).toEqual([]);
    expect(JSON.stringify(list)).not.toContain("db.internal");
    expect(container(list as Obj[]).env).toEqual(ADVERTISE);
    expect(secret.given).toEqual({ ASH_DATABASE_URL: "postgresql://ash:pw@db.internal:26257/ash?sslmode=verify-full" });
    expect(secret.generate).toEqual(["ASH_API_KEY", "ASH_CREDENTIAL_KEY", "ASH_CLUSTER_SECRET"]);
  });

  it("--database cockroach: a single-node StatefulSet, an init job that creates the ash database, and a policy that lets only Ash in", () => {
    const list = objects({ database: "cockroach" });
    const db = find(list, "StatefulSet", "ash-cockroach")!;
    expect(db.spec.replicas).toBe(1);
    expect(db.spec.template.spec.containers[0].args).toEqual(["start-single-node", "--insecure"]);
    expect(db.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe("10Gi");
    expect(find(list, "Job", "ash-cockroach-init")!.spec.template.spec.containers[0].args.join(" ")).toContain("CREATE DATABASE IF NOT EXISTS ash");
    expect(container(list).env).toEqual([...ADVERTISE, { name: "ASH_DATABASE_URL", value: "postgresql://ash@ash-cockroach:26257/ash?sslmode=disable" }]);
    const policy = find(list, "NetworkPolicy", "ash-cockroach")!;
    expect(policy.spec.ingress[0].ports).toEqual([{ port: 26257, protocol: "TCP" }]);
    expect(policy.spec.ingress[0].from.map((f: Obj) => f.podSelector.matchLabels["app.kubernetes.io/component"])).toEqual(["server", "database-init"]);
  });

  it("--database postgres: the password is generated into the Secret and used by both sides, never written in the manifests", () => {
    const { objects: list, secret } = buildKubernetes({ database: "postgres", databaseSize: "5Gi" });
    const db = find(list as Obj[], "StatefulSet", "ash-postgres")!;
    expect(db.spec.template.spec.containers[0].env).toContainEqual({ name: "POSTGRES_PASSWORD", valueFrom: { secretKeyRef: { name: "ash", key: "POSTGRES_PASSWORD" } } });
    expect(db.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBe("5Gi");
    // Kubernetes fills $(POSTGRES_PASSWORD) from the Secret (envFrom) when it starts the container.
    expect(container(list as Obj[]).env).toEqual([...ADVERTISE, { name: "ASH_DATABASE_URL", value: "postgresql://ash:$(POSTGRES_PASSWORD)@ash-postgres:5432/ash" }]);
    expect(secret.generate).toEqual(["ASH_API_KEY", "ASH_CREDENTIAL_KEY", "ASH_CLUSTER_SECRET", "POSTGRES_PASSWORD"]);
  });

  it("without a bucket: one server with a ReadWriteOnce volume for /data, replaced with Recreate", () => {
    const list = objects({ database: "postgres", dataSize: "50Gi" });
    expect(find(list, "PersistentVolumeClaim", "ash-data")!.spec).toEqual({ accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "50Gi" } } });
    expect(server(list).spec.strategy).toEqual({ type: "Recreate" });
    expect(server(list).spec.template.spec.volumes).toEqual([{ name: "data", persistentVolumeClaim: { claimName: "ash-data" } }]);
    expect(server(list).spec.replicas).toBe(1);
  });

  it("with a bucket: scratch /data, rolling updates that start a new server before an old one drains, and the bucket's settings", () => {
    const { objects: list, secret } = buildKubernetes({
      databaseUrl: "postgresql://db.internal/ash",
      snapshotStore: "s3://ash-sessions/prod",
      s3Endpoint: "https://minio.internal:9000",
      s3Region: "eu-west-1",
      replicas: "3",
    });
    expect(find(list as Obj[], "PersistentVolumeClaim")).toBeUndefined();
    expect(server(list as Obj[]).spec.replicas).toBe(3);
    expect(server(list as Obj[]).spec.strategy).toEqual({ type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    expect(server(list as Obj[]).spec.template.spec.volumes).toEqual([{ name: "data", emptyDir: {} }]);
    expect(find(list as Obj[], "ConfigMap")!.data).toMatchObject({ ASH_SNAPSHOT_STORE: "s3://ash-sessions/prod", ASH_S3_ENDPOINT: "https://minio.internal:9000", ASH_S3_REGION: "eu-west-1" });
    expect(secret.fromEnvironment.filter((e) => e.required).map((e) => e.name)).toEqual(["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
  });

  it("takes --namespace, --image, --cpu, --memory and -e (a literal into the ConfigMap, a bare name into the Secret)", () => {
    const { objects: list, secret } = buildKubernetes({
      database: "cockroach",
      namespace: "agents",
      image: "registry.example/ash:edge",
      cpu: "500m",
      memory: "16Gi",
      env: ["ASH_WARM_POOL=support=2", "GITHUB_TOKEN"].map(parseEnvAssignment),
    });
    expect((list as Obj[]).every((o) => (o.kind === "Namespace" ? o.metadata.name : o.metadata.namespace) === "agents")).toBe(true);
    expect(container(list as Obj[]).image).toBe("registry.example/ash:edge");
    expect(container(list as Obj[]).resources).toEqual({ requests: { cpu: "500m", memory: "16Gi" }, limits: { memory: "16Gi" } });
    expect(find(list as Obj[], "ConfigMap")!.data.ASH_WARM_POOL).toBe("support=2");
    expect(secret.fromEnvironment).toContainEqual({ name: "GITHUB_TOKEN", required: true, why: "-e GITHUB_TOKEN" });
  });

  it.each([
    [{}, /Say which database: --database-url postgresql:\/\/\.\.\. .* or --database cockroach\|postgres/],
    [{ database: "cockroach", databaseUrl: "postgresql://db/ash" }, /either --database .* or --database-url/],
    [{ database: "mysql" }, /--database must be one of cockroach, postgres/],
    [{ databaseUrl: "mysql://db/ash" }, /--database-url must be a postgresql:\/\/ URL/],
    [{ database: "postgres", replicas: "3" }, /--replicas above 1 needs --snapshot-store s3:\/\/<bucket>/],
    [{ database: "postgres", replicas: "0" }, /--replicas must be a whole number greater than 0/],
    [{ database: "postgres", namespace: "Ash_Prod" }, /--namespace must be a Kubernetes name/],
    [{ database: "postgres", snapshotStore: "gs://bucket" }, /--snapshot-store must be s3:\/\/<bucket>/],
    [{ database: "postgres", s3Region: "eu-west-1" }, /--s3-endpoint and --s3-region need --snapshot-store/],
    [{ database: "postgres", snapshotStore: "s3://ash-b", s3Endpoint: "minio:9000" }, /--s3-endpoint must be an http/],
    [{ database: "postgres", memory: "lots" }, /--memory must be a Kubernetes quantity like 8Gi/],
    [{ database: "postgres", cpu: "0" }, /--cpu must be a Kubernetes quantity/],
    [{ database: "postgres", snapshotStore: "s3://ash-b", dataSize: "5Gi" }, /--data-size is for workspaces on a volume/],
    [{ databaseUrl: "postgresql://db/ash", databaseSize: "5Gi" }, /--database-size is for --database/],
    [{ database: "postgres", env: [parseEnvAssignment("ASH_API_KEY=abcdefgh")] }, /-e ASH_API_KEY=\.\.\. would put a secret in the ConfigMap/],
    [{ database: "postgres", env: [parseEnvAssignment("ASH_DATABASE_URL=postgresql://x/y")] }, /use --database-url/],
    [{ database: "postgres", env: [parseEnvAssignment("ASH_CLUSTER_SECRET=0123456789abcdef0123456789abcdef")] }, /-e ASH_CLUSTER_SECRET=\.\.\. would put a secret in the ConfigMap/],
    [{ database: "postgres", env: [parseEnvAssignment("ASH_ADVERTISE_URL=http://10.0.0.1:4100")] }, /-e ASH_ADVERTISE_URL: the Deployment sets it for every pod from each pod's IP/],
    [{ database: "postgres", env: [parseEnvAssignment("POD_IP=10.0.0.1")] }, /-e POD_IP: the Deployment sets it/],
    [{ database: "postgres", maxSandboxes: 10, env: [parseEnvAssignment("ASH_MAX_SANDBOXES=20")] }, /--max-sandboxes and -e ASH_MAX_SANDBOXES disagree/],
    [{ database: "postgres", env: [parseEnvAssignment("ASH_SNAPSHOT_STORE=s3://ash-b")] }, /use --snapshot-store/],
  ] as Array<[KubeOptions, RegExp]>)("refuses %j", (options, message) => {
    expect(() => buildKubernetes(options)).toThrow(message);
  });
});

describe("renderKubernetes", () => {
  it("writes one YAML document per object, the header first, with the reasons as comments", () => {
    const text = renderKubernetes({ database: "postgres" });
    expect(text.startsWith(`# Ash on Kubernetes with a single-node PostgreSQL for trying out, workspaces on a volume; generated by \`ash kube generate\` (Ash ${pkg.version}).`)).toBe(true);
    expect(text.split(/^---$/m)).toHaveLength(objects({ database: "postgres" }).length);
    expect(text).toContain("# Not privileged: only what bubblewrap needs");
    expect(text).toContain(`# preStop (${PRESTOP_SECONDS} s) + the server's own shutdown limit (${SHUTDOWN_LIMIT_MS / 1000} s`);
  });
});

const pyYamlSkip = skipUnlessReady(
  "the YAML read-back check",
  (() => {
    try {
      execFileSync("python3", ["-c", "import yaml"]);
      return undefined;
    } catch {
      return "python3 with PyYAML is missing (Debian's python3-yaml)";
    }
  })(),
);

describe("the written YAML", () => {
  it.skipIf(pyYamlSkip)("reads back as exactly the rendered objects (PyYAML, a YAML 1.1 reader like the one kubectl uses)", () => {
    for (const options of Object.values(KUBE_REFERENCES)) {
      const withOddValue = { ...options, env: [parseEnvAssignment("WEIRD=a: b # c $d 'e' \"f\" yes")] };
      const parsed = JSON.parse(
        execFileSync("python3", ["-c", "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin.read()))))"], { input: renderKubernetes(withOddValue) }).toString(),
      );
      expect(parsed).toEqual(buildKubernetes(withOddValue).objects);
    }
  });
});

describe("the reference files in infra/kubernetes/", () => {
  // Regenerate after a template change: UPDATE_REFERENCE=1 npx vitest run tests/unit/kube-render.test.ts
  for (const [name, options] of Object.entries(KUBE_REFERENCES)) {
    it(`infra/kubernetes/ash.${name}.yaml is what ash kube generate writes for ${JSON.stringify(options)}`, () => {
      const path = join(root, "infra", "kubernetes", `ash.${name}.yaml`);
      const rendered = renderKubernetes(options);
      if (process.env.UPDATE_REFERENCE === "1") writeFileSync(path, rendered);
      expect(readFileSync(path, "utf8")).toBe(rendered);
    });
  }
});
