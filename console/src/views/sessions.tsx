import { useState } from "preact/hooks";
import { SESSION_STATUSES, type SessionStatus } from "../../../src/contract";
import type { ViewProps } from "../main";
import { ago, count, when } from "../format";
import { isSignedOut, messageOf } from "../api";
import { Loading, Problem, Status, useLoad } from "./common";

const PAGE_SIZE = 20;

export function Sessions(props: ViewProps) {
  const { client } = props;
  // Cursors of the pages seen so far: [undefined (first page), cursor of page 2, …].
  const [cursors, setCursors] = useState<Array<string | undefined>>([undefined]);
  const [status, setStatus] = useState<SessionStatus | "">("");
  const cursor = cursors[cursors.length - 1];
  const { data, error, reload } = useLoad(props, () => client.listSessions({ limit: PAGE_SIZE, cursor, status: status || undefined }), [client, cursor, status]);
  const agents = useLoad(props, () => client.listAgents(), [client]);
  const [agent, setAgent] = useState("");
  const [problem, setProblem] = useState<string>();
  const [starting, setStarting] = useState(false);

  const start = async (e: Event) => {
    e.preventDefault();
    const name = agent || agents.data?.[0]?.name;
    if (!name) return setProblem("Deploy an agent first.");
    setStarting(true);
    setProblem(undefined);
    try {
      const session = await client.createSession({ agent: name });
      location.hash = `#/sessions/${encodeURIComponent(session.id)}`;
    } catch (err) {
      if (isSignedOut(err)) props.onUnauthorized();
      else setProblem(messageOf(err));
    } finally {
      setStarting(false);
    }
  };

  return (
    <section aria-labelledby="sessions-title">
      <h1 id="sessions-title">Sessions</h1>
      <div class="toolbar">
        <form class="row" onSubmit={start} aria-label="New session">
          <label for="new-agent">Agent</label>
          <select id="new-agent" value={agent || agents.data?.[0]?.name} onChange={(e) => setAgent((e.target as HTMLSelectElement).value)}>
            {(agents.data ?? []).map((a) => (
              <option value={a.name}>{a.name}</option>
            ))}
          </select>
          <button type="submit" disabled={starting || !agents.data?.length}>
            {starting ? "Starting…" : "New session"}
          </button>
        </form>
        <div class="row">
          <label for="status-filter">Status</label>
          <select
            id="status-filter"
            value={status}
            onChange={(e) => {
              setStatus((e.target as HTMLSelectElement).value as SessionStatus | "");
              setCursors([undefined]);
            }}
          >
            <option value="">any</option>
            {SESSION_STATUSES.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
          <button type="button" class="quiet" onClick={reload}>
            Refresh
          </button>
        </div>
      </div>
      <Problem text={error ?? problem} />
      {!data ? (
        !error && <Loading />
      ) : data.sessions.length === 0 ? (
        <p class="muted">No sessions{status ? ` with status ${status}` : ""}.</p>
      ) : (
        <div class="scroll">
          <table class="sessions">
            <thead>
              <tr>
                <th scope="col">Session</th>
                <th scope="col">Status</th>
                <th scope="col">Agent</th>
                <th scope="col">Created</th>
                <th scope="col">Last activity</th>
                <th scope="col" class="num">Turns</th>
                <th scope="col" class="num">Tokens</th>
              </tr>
            </thead>
            <tbody>
              {data.sessions.map((s) => (
                <tr data-session={s.id}>
                  <td>
                    <a href={`#/sessions/${encodeURIComponent(s.id)}`} class="mono">
                      {s.id.slice(0, 8)}
                    </a>
                  </td>
                  <td>
                    <Status status={s.status} />
                  </td>
                  <td>{s.agentName}</td>
                  <td>{when(s.createdAt)}</td>
                  <td title={when(s.lastActiveAt)}>{ago(s.lastActiveAt)}</td>
                  <td class="num" data-col="turns">{count(s.turns ?? 0)}</td>
                  <td class="num" data-col="tokens">{count(s.tokens ?? 0)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <nav class="pager" aria-label="Pages">
        <button type="button" class="quiet" disabled={cursors.length < 2} onClick={() => setCursors((c) => c.slice(0, -1))}>
          Previous
        </button>
        <span class="muted">Page {cursors.length}</span>
        <button type="button" class="quiet" disabled={!data?.nextCursor} onClick={() => data?.nextCursor && setCursors((c) => [...c, data.nextCursor!])}>
          Next
        </button>
      </nav>
    </section>
  );
}
