import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service } from "kubernetes-models/v1";
import { buildKubernetes, prepareKubeSecret, type KubeObject, type KubeOptions } from "../../src/runspec";
import { KUBE_REFERENCES } from "../helpers/kube-references";

// Every object `ash kube generate` writes, checked against the Kubernetes API's
// own schemas (the OpenAPI definitions kubernetes-models compiles into validators),
// and against the same definitions as TypeScript types, which also catch a field
// the API does not have (a misspelt key that the API server would drop or refuse).
const root = join(import.meta.dirname, "../..");
const MODELS: Record<string, new (data: any) => { validate(): void; toJSON(): unknown }> = {
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "batch/v1/Job": Job,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "v1/ConfigMap": ConfigMap,
  "v1/Namespace": Namespace,
  "v1/PersistentVolumeClaim": PersistentVolumeClaim,
  "v1/Secret": Secret,
  "v1/Service": Service,
};

function validate(object: KubeObject): void {
  const Model = MODELS[`${object.apiVersion}/${object.kind}`];
  if (!Model) throw new Error(`no schema known for ${object.apiVersion} ${object.kind}`);
  const model = new Model(object);
  model.validate();
  // The model keeps every field it was given: nothing was dropped or renamed on the way.
  expect(model.toJSON()).toEqual(object);
}

/** The package module and interface of each kind, for the type check. */
const TYPES: Record<string, [string, string]> = {
  "apps/v1/Deployment": ["kubernetes-models/apps/v1", "IDeployment"],
  "apps/v1/StatefulSet": ["kubernetes-models/apps/v1", "IStatefulSet"],
  "batch/v1/Job": ["kubernetes-models/batch/v1", "IJob"],
  "networking.k8s.io/v1/NetworkPolicy": ["kubernetes-models/networking.k8s.io/v1", "INetworkPolicy"],
  "policy/v1/PodDisruptionBudget": ["kubernetes-models/policy/v1", "IPodDisruptionBudget"],
  "v1/ConfigMap": ["kubernetes-models/v1", "IConfigMap"],
  "v1/Namespace": ["kubernetes-models/v1", "INamespace"],
  "v1/PersistentVolumeClaim": ["kubernetes-models/v1", "IPersistentVolumeClaim"],
  "v1/Secret": ["kubernetes-models/v1", "ISecret"],
  "v1/Service": ["kubernetes-models/v1", "IService"],
};

/**
 * Compiles `const oN: IKind = <object>;` for each object, all in one program:
 * TypeScript's check of object literals refuses any key the interface does not
 * declare, at every depth. Returns the complaints, each with its object's label.
 */
function typeErrors(objects: Array<{ label: string; object: KubeObject }>): string[] {
  const file = join(root, "tests", "unit", "kube-objects.generated.ts");
  const imports = new Map<string, Set<string>>();
  const lines = objects.map(({ object }, i) => {
    const [module, name] = TYPES[`${object.apiVersion}/${object.kind}`] ?? ["", "never"];
    if (module) imports.set(module, new Set([...(imports.get(module) ?? []), name]));
    return `export const o${i}: ${name} = ${JSON.stringify(object)};`;
  });
  const source = [...[...imports].map(([module, names]) => `import type { ${[...names].join(", ")} } from "${module}";`), ...lines].join("\n");
  const options: ts.CompilerOptions = { strict: true, noEmit: true, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, target: ts.ScriptTarget.ES2022, skipLibCheck: true, types: [] };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, version, ...rest) => (name === file ? ts.createSourceFile(name, source, version) : getSourceFile(name, version, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
    const entry = line >= imports.size ? objects[line - imports.size] : undefined;
    return `${entry ? `${entry.label}: ` : ""}${ts.flattenDiagnosticMessageText(d.messageText, " ")}`;
  });
}

const label = (variant: string, object: KubeObject) => `${variant}: ${object.kind} ${(object.metadata as { name: string }).name}`;

const VARIANTS: Record<string, KubeOptions> = {
  ...KUBE_REFERENCES,
  "three replicas on a bucket with every option": {
    database: "postgres",
    databaseSize: "50Gi",
    snapshotStore: "s3://ash-sessions/prod",
    s3Endpoint: "https://minio.internal:9000",
    s3Region: "eu-west-1",
    replicas: 3,
    namespace: "agents",
    image: "registry.example/ash:edge",
    cpu: "1500m",
    memory: "16Gi",
    maxSandboxes: 40,
    idleTimeoutMs: 600000,
    env: [{ key: "ASH_LOG_FORMAT", value: "json" }, { key: "GITHUB_TOKEN" }],
  },
};

describe("the rendered objects against the Kubernetes schemas", () => {
  for (const [name, options] of Object.entries(VARIANTS)) {
    it(`${name}: every object is valid`, () => {
      const { objects } = buildKubernetes(options);
      expect(objects.length).toBeGreaterThanOrEqual(6);
      for (const object of objects) validate(object);
    });
  }

  it("declares no field the API does not have, in any variant", () => {
    const all = Object.entries(VARIANTS).flatMap(([variant, options]) => buildKubernetes(options).objects.map((object) => ({ label: label(variant, object), object })));
    expect(typeErrors(all)).toEqual([]);
  });

  it("knows a field the API does not have when it sees one", () => {
    const object = structuredClone(buildKubernetes(KUBE_REFERENCES.postgres!).objects.find((o) => o.kind === "Deployment")!) as any;
    object.spec.template.spec.containers[0].securityContext.capabilites = { add: ["SYS_ADMIN"] };
    const errors = typeErrors([{ label: "misspelt", object }]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^misspelt: .*capabilites.* does not exist in type 'ISecurityContext'/);
  });

  it("knows a bad object when it sees one (a port given as text where a number belongs)", () => {
    const object = structuredClone(buildKubernetes(KUBE_REFERENCES.postgres!).objects.find((o) => o.kind === "Deployment")!) as any;
    object.spec.template.spec.containers[0].ports[0].containerPort = "4100";
    expect(() => validate(object)).toThrow(/containerPort must be integer/);
  });
});

describe("the Secret", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ash-kube-schema-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("is a valid Secret for every variant, with its generated keys", async () => {
    const secrets: Array<{ label: string; object: KubeObject }> = [];
    for (const [variant, options] of Object.entries(VARIANTS)) {
      const { secret: plan } = buildKubernetes(options);
      const hostEnv = { AWS_ACCESS_KEY_ID: "AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY: "secret-example", GITHUB_TOKEN: "ghp_example" };
      const { secret } = await prepareKubeSecret(join(dir, "missing.json"), plan, hostEnv);
      validate(secret);
      secrets.push({ label: label(variant, secret), object: secret });
      expect(Object.keys(secret.stringData as object)).toEqual(expect.arrayContaining(plan.generate));
    }
    expect(typeErrors(secrets)).toEqual([]);
  });
});
