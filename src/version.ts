import pkg from "../package.json" with { type: "json" };

/** The package version; the CLI pulls the image tagged with it. */
export const version: string = pkg.version;
