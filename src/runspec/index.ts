// Render templates/ into what Docker and Kubernetes run: the `ash start` container, the Compose file, the Kubernetes manifests.
export { fillTemplate } from "./template";
export { toYaml, yamlScalar, type YamlValue, type YamlOptions } from "./yaml";
export { collectRepeatedFlag, parseEnvAssignment, mergeEnv, isEnvName, type EnvAssignment } from "./env";
export {
  renderRunSpec,
  toCreateOptions,
  toDockerRunArgs,
  formatDockerRun,
  printableSpec,
  isolationOptions,
  defaultImage,
  parsePort,
  checkImageName,
  CONTAINER_NAME,
  containerName,
  CONTAINER_PORT,
  DEFAULT_PORT,
  MANAGED_LABEL,
  type RunSpec,
  type RunSpecOptions,
  type AshHostConfig,
} from "./run-spec";
export {
  renderCompose,
  buildCompose,
  composeSecretNames,
  parseDatabase,
  DATABASES,
  DEFAULT_MAX_SANDBOXES,
  DEFAULT_IDLE_TIMEOUT_MS,
  type ComposeDatabase,
  type ComposeOptions,
  type ComposeDocument,
} from "./compose";
export {
  renderKubernetes,
  buildKubernetes,
  parseKubeDatabase,
  prepareKubeSecret,
  writeKubeSecret,
  KUBE_DATABASES,
  KUBE_DEFAULTS,
  KUBE_SECRET_FILE,
  PRESTOP_SECONDS,
  GRACE_MARGIN_SECONDS,
  type KubeDatabase,
  type KubeOptions,
  type KubeManifests,
  type KubeObject,
  type KubeSecretPlan,
  type KubeSecretResult,
} from "./kubernetes";
export { ensureDotEnvSecrets, parseDotEnv, generateSecret, type DotEnvResult } from "./dotenv";
export { applyRunSpec } from "./apply";
