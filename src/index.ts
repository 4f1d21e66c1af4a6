// The package's main entry: the typed client for programs, and the server for
// embedding. The CLI (`ash`) and the server process (`ash-server`) are bins.
export * from "./client/index";
export { loadConfig, ConfigError, type ServerConfig } from "./config";
export { version } from "./version";
