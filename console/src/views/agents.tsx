import { useState } from "preact/hooks";
import type { ViewProps } from "../main";
import { asText, bytes, download, when } from "../format";
import { isSignedOut, messageOf } from "../api";
import { Loading, Problem, useLoad } from "./common";
import { AGENT_NAME, AGENT_NAME_RULE } from "../../../src/contract";
import { agentFiles, fromDrop, fromInput, fromZip, type PickedFolder } from "../deploy";

export function Agents(props: ViewProps) {
  const { data, error, reload } = useLoad(props, () => props.client.listAgents(), [props.client]);
  return (
    <section aria-labelledby="agents-title">
      <h1 id="agents-title">Agents</h1>
      <Deploy {...props} onDeployed={reload} />
      <Problem text={error} />
      {!data ? (
        !error && <Loading />
      ) : data.length === 0 ? (
        <p class="muted">No agents yet: deploy a folder above, or with `ash deploy &lt;folder&gt;`.</p>
      ) : (
        <div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Version</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {data.map((a) => (
                <tr>
                  <td>
                    <a href={`#/agents/${encodeURIComponent(a.name)}`}>{a.name}</a>
                  </td>
                  <td>v{a.version}</td>
                  <td>{when(a.updatedAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

export function AgentPage(props: ViewProps & { name: string }) {
  const { client, name } = props;
  const { data, error } = useLoad(
    props,
    async () => {
      const [agent, versions, files] = await Promise.all([client.getAgent(name), client.listAgentVersions(name), client.listAgentFiles(name)]);
      return { agent, versions, files };
    },
    [client, name],
  );
  const [open, setOpen] = useState<{ path: string; text?: string; content: Uint8Array }>();
  const [problem, setProblem] = useState<string>();
  const [starting, setStarting] = useState(false);

  const openFile = async (path: string) => {
    setProblem(undefined);
    try {
      const file = await client.readAgentFile(name, path);
      setOpen({ path, content: file.content, text: asText(file.content) });
    } catch (e) {
      if (isSignedOut(e)) props.onUnauthorized();
      else setProblem(messageOf(e));
    }
  };
  const startSession = async () => {
    setStarting(true);
    setProblem(undefined);
    try {
      const session = await client.createSession({ agent: name });
      location.hash = `#/sessions/${encodeURIComponent(session.id)}`;
    } catch (e) {
      if (isSignedOut(e)) props.onUnauthorized();
      else setProblem(messageOf(e));
    } finally {
      setStarting(false);
    }
  };

  return (
    <section aria-labelledby="agent-title">
      <p class="crumbs">
        <a href="#/agents">Agents</a> /
      </p>
      <h1 id="agent-title">{name}</h1>
      <Problem text={error ?? problem} />
      {!data ? (
        !error && <Loading />
      ) : (
        <>
          <p>
            <button type="button" onClick={startSession} disabled={starting}>
              {starting ? "Starting…" : "New session"}
            </button>
          </p>
          <h2>Versions</h2>
          <div class="scroll">
            <table>
              <thead>
                <tr>
                  <th scope="col">Version</th>
                  <th scope="col">Active</th>
                  <th scope="col">Files</th>
                  <th scope="col">Created</th>
                  <th scope="col">Notes</th>
                </tr>
              </thead>
              <tbody>
                {data.versions.map((v) => (
                  <tr>
                    <td>v{v.version}</td>
                    <td>{v.isActive ? "active" : ""}</td>
                    <td>{v.fileCount}</td>
                    <td>{when(v.createdAt)}</td>
                    <td>{v.releaseNotes ?? ""}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <h2>Files</h2>
          <FileList files={data.files} onOpen={openFile} />
          {open && <FilePreview file={open} onClose={() => setOpen(undefined)} />}
        </>
      )}
    </section>
  );
}

export function FileList(props: { files: Array<{ path: string; size: number }>; onOpen: (path: string) => void; onDownload?: (path: string) => void }) {
  if (props.files.length === 0) return <p class="muted">No files.</p>;
  return (
    <ul class="files">
      {props.files.map((f) => (
        <li>
          <button type="button" class="link" onClick={() => props.onOpen(f.path)}>
            {f.path}
          </button>
          <span class="muted">{bytes(f.size)}</span>
          {props.onDownload && (
            <button type="button" class="quiet small" aria-label={`Download ${f.path}`} onClick={() => props.onDownload!(f.path)}>
              Download
            </button>
          )}
        </li>
      ))}
    </ul>
  );
}

export function FilePreview(props: { file: { path: string; text?: string; content: Uint8Array }; onClose: () => void }) {
  const { file } = props;
  return (
    <figure class="preview" aria-label={`File ${file.path}`}>
      <figcaption>
        <strong>{file.path}</strong>
        <span class="muted"> {bytes(file.content.length)}</span>
        <button type="button" class="quiet small" onClick={() => download(file.path, file.content)}>
          Download
        </button>
        <button type="button" class="quiet small" onClick={props.onClose}>
          Close
        </button>
      </figcaption>
      {file.text !== undefined ? <pre>{file.text.length > 200_000 ? `${file.text.slice(0, 200_000)}\n…` : file.text}</pre> : <p class="muted">Binary file: download it to see it.</p>}
    </figure>
  );
}

/** Deploys a folder (picked, or dropped on the form) as a new agent, or as a new version of one. */
function Deploy(props: ViewProps & { onDeployed: () => void }) {
  const [folder, setFolder] = useState<PickedFolder>();
  const [name, setName] = useState("");
  const [over, setOver] = useState(false);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ ok?: string; problem?: string }>({});

  const pick = (picked: PickedFolder | undefined) => {
    setResult({});
    if (!picked || picked.files.length === 0) return setResult({ problem: "That folder has no files." });
    setFolder(picked);
    if (!name && AGENT_NAME.test(picked.name)) setName(picked.name);
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!folder) return setResult({ problem: "Choose or drop the agent's folder first." });
    if (!AGENT_NAME.test(name)) return setResult({ problem: `An agent name is ${AGENT_NAME_RULE}.` });
    setBusy(true);
    setResult({});
    try {
      const agent = await props.client.deployAgent({ name, files: await agentFiles(folder) });
      setResult({ ok: `Deployed ${agent.name} v${agent.version} (${folder.files.length} files).` });
      setFolder(undefined);
      // The next folder names the next agent.
      setName("");
      props.onDeployed();
    } catch (error) {
      if (isSignedOut(error)) props.onUnauthorized();
      else setResult({ problem: messageOf(error) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <form
      class={`deploy ${over ? "over" : ""}`}
      aria-label="Deploy an agent"
      onSubmit={submit}
      onDragOver={(e) => {
        e.preventDefault();
        setOver(true);
      }}
      onDragLeave={() => setOver(false)}
      onDrop={async (e) => {
        e.preventDefault();
        setOver(false);
        if (e.dataTransfer) await fromDrop(e.dataTransfer).then(pick, (error) => setResult({ problem: messageOf(error) }));
      }}
    >
      <p class="drop-hint">Drop an agent folder or a zip of one here (its CLAUDE.md and files), or choose one.</p>
      <div class="row">
        <label for="deploy-folder">Folder</label>
        <input id="deploy-folder" type="file" {...{ webkitdirectory: true }} multiple onChange={(e) => pick(fromInput((e.target as HTMLInputElement).files!))} />
        <label for="deploy-zip">or a zip</label>
        <input
          id="deploy-zip"
          type="file"
          accept=".zip,application/zip"
          onChange={(e) => {
            const chosen = (e.target as HTMLInputElement).files?.[0];
            if (chosen) fromZip(chosen).then(pick, (error) => setResult({ problem: messageOf(error) }));
          }}
        />
        <label for="deploy-name">Name</label>
        <input id="deploy-name" value={name} pattern="[a-zA-Z0-9_-]{1,64}" onInput={(e) => setName((e.target as HTMLInputElement).value.trim())} />
        <button type="submit" disabled={busy || !folder}>
          {busy ? "Deploying…" : "Deploy"}
        </button>
      </div>
      {folder && <p class="muted small">{folder.files.length} files ready: {folder.files.slice(0, 5).map((f) => f.path).join(", ")}{folder.files.length > 5 ? ", …" : ""}</p>}
      {result.ok && (
        <p class="ok" role="status">
          {result.ok}
        </p>
      )}
      <Problem text={result.problem} />
    </form>
  );
}
