/** A setting in the environment that the server cannot run with; the message names the variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
}
