import { useEffect, useRef, useState } from "preact/hooks";
import type { Checkpoint, SandboxLogLine, Session, StreamEvent } from "../../../src/client";
import type { ViewProps } from "../main";
import { isSignedOut, messageOf } from "../api";
import { apply, EMPTY, withSent, withUsers, type Conversation, type Item } from "../conversation";
import { asText, download, when } from "../format";
import { FileList, FilePreview } from "./agents";
import { Loading, Problem, Status } from "./common";

/** Pages of stored events read at most when the page opens (1000 each); the live stream follows after them. */
const MAX_HISTORY_PAGES = 100;

export function SessionPage(props: ViewProps & { id: string }) {
  const { client, id } = props;
  const [session, setSession] = useState<Session>();
  const [conversation, setConversation] = useState<Conversation>(EMPTY);
  const [loaded, setLoaded] = useState(false);
  const [problem, setProblem] = useState<string>();
  const [filesTick, setFilesTick] = useState(0);
  const lastId = useRef(0);

  const fail = (error: unknown) => {
    if (isSignedOut(error)) props.onUnauthorized();
    else setProblem(messageOf(error));
  };
  const take = (event: StreamEvent) => {
    lastId.current = Math.max(lastId.current, event.id);
    setConversation((c) => apply(c, event));
    if (event.type === "done") {
      client.getSession(id).then(setSession, () => undefined);
      setFilesTick((t) => t + 1);
    }
  };

  // The stored conversation, then the live stream from the last stored event on (Last-Event-ID):
  // a reload mid-turn picks the turn up where the stored events end, without repeating any.
  useEffect(() => {
    const stop = new AbortController();
    (async () => {
      try {
        const [current, messages] = await Promise.all([client.getSession(id), client.listMessages(id, { limit: 1000 })]);
        setSession(current);
        let c = withUsers(EMPTY, messages);
        for (let page = 0; page < MAX_HISTORY_PAGES; page++) {
          const events = await client.listEvents(id, { after: c.lastId, limit: 1000 });
          for (const event of events) c = apply(c, event);
          if (events.length < 1000) break;
        }
        lastId.current = c.lastId;
        setConversation(c);
        setLoaded(true);
      } catch (error) {
        if (!stop.signal.aborted) fail(error);
        return;
      }
      // Follow while the page is open; a stream that ends or breaks is opened again after a pause.
      for (let wait = 1000; !stop.signal.aborted; wait = Math.min(wait * 2, 10_000)) {
        try {
          for await (const event of client.streamEvents(id, { lastEventId: lastId.current, signal: stop.signal })) {
            take(event);
            wait = 1000;
          }
        } catch (error) {
          if (stop.signal.aborted) return;
          if (isSignedOut(error)) return props.onUnauthorized();
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    })();
    return () => stop.abort();
  }, [client, id]);

  const act = async (what: () => Promise<Session | boolean | void>) => {
    setProblem(undefined);
    try {
      const answer = await what();
      if (answer && typeof answer === "object") setSession(answer);
    } catch (error) {
      fail(error);
    }
  };

  const send = async (text: string) => {
    setProblem(undefined);
    const key = `sent-${Date.now()}`;
    setConversation((c) => withSent(c, text, key));
    let accepted = false;
    try {
      for await (const event of client.sendMessage(id, text)) {
        accepted = true;
        take(event);
      }
    } catch (error) {
      // A refused message (busy, over a limit) was never part of the conversation.
      if (!accepted) setConversation((c) => ({ ...c, items: c.items.filter((i) => i.key !== key) }));
      fail(error);
    }
  };

  if (!loaded) {
    if (!problem) return <Loading />;
    return (
      <section aria-labelledby="session-title">
        <p class="crumbs">
          <a href="#/sessions">Sessions</a> /
        </p>
        <h1 id="session-title" class="mono">
          {id}
        </h1>
        <Problem text={problem} />
      </section>
    );
  }
  const running = conversation.running;
  const status = session?.status ?? "";
  const over = status === "ended";
  return (
    <section aria-labelledby="session-title" class="session">
      <p class="crumbs">
        <a href="#/sessions">Sessions</a> /
      </p>
      <h1 id="session-title" class="mono">
        {id}
      </h1>
      {session && (
        <p class="meta">
          <Status status={session.status} /> {running && <span class="status status-running">turn running</span>} agent <a href={`#/agents/${encodeURIComponent(session.agentName)}`}>{session.agentName}</a> · created {when(session.createdAt)} · last activity {when(session.lastActiveAt)}
          {session.parentSessionId && (
            <>
              {" "}
              · forked from <a href={`#/sessions/${encodeURIComponent(session.parentSessionId)}`}>{session.parentSessionId.slice(0, 8)}</a>
            </>
          )}
        </p>
      )}
      <div class="actions" role="group" aria-label="Session actions">
        <button type="button" disabled={!running} onClick={() => act(() => client.interrupt(id))}>
          Interrupt
        </button>
        <button type="button" disabled={over || running || status === "paused"} onClick={() => act(() => client.pauseSession(id))}>
          Pause
        </button>
        <button type="button" disabled={over || status === "active" || status === "starting"} onClick={() => act(() => client.resumeSession(id))}>
          Resume
        </button>
        <button type="button" disabled={over || status === "stopped"} onClick={() => act(() => client.stopSession(id))}>
          Stop
        </button>
        <button
          type="button"
          disabled={running}
          onClick={() =>
            act(async () => {
              const fork = await client.forkSession(id);
              location.hash = `#/sessions/${encodeURIComponent(fork.id)}`;
            })
          }
        >
          Fork
        </button>
      </div>
      <Problem text={problem} />
      <div class="split">
        <div class="conversation" aria-label="Conversation">
          {/* Said once per change, not once per streamed word. */}
          <p class="visually-hidden" role="status">
            {running ? "The agent is answering." : conversation.items.length > 0 ? "The agent has finished." : ""}
          </p>
          {conversation.items.length === 0 && <p class="muted">No messages yet.</p>}
          {conversation.items.map((item) => (
            <ItemView key={item.key} item={item} />
          ))}
          <SendBox disabled={over || running} onSend={send} />
        </div>
        <div class="side">
          <Files {...props} tick={filesTick} />
          <Checkpoints {...props} />
          <SandboxLog {...props} />
        </div>
      </div>
    </section>
  );
}

function ItemView({ item }: { item: Item }) {
  switch (item.kind) {
    case "user":
      return (
        <div class="msg user" data-kind="user">
          <span class="who">You</span>
          <p>{item.text}</p>
        </div>
      );
    case "text":
      return (
        <div class="msg agent" data-kind="text">
          <span class="who">Agent</span>
          <p>{item.text}</p>
        </div>
      );
    case "thinking":
      return (
        <details class="thinking" data-kind="thinking">
          <summary>Thinking</summary>
          <p>{item.text}</p>
        </details>
      );
    case "tool":
      return (
        <details class={`tool ${item.isError ? "bad" : ""}`} data-kind="tool" open>
          <summary>
            <span class="mono">{item.name}</span> {item.output === undefined ? <span class="muted">running…</span> : item.isError ? <span class="problem-inline">failed</span> : <span class="muted">done</span>}
          </summary>
          <pre class="input">{typeof item.input === "object" ? JSON.stringify(item.input, null, 2) : String(item.input ?? "")}</pre>
          {item.output !== undefined && <pre class="output">{item.output}</pre>}
        </details>
      );
    case "error":
      return (
        <p class="problem" data-kind="error" role="alert">
          {item.text}
        </p>
      );
    case "turn":
      return (
        <p class="turn-end muted" data-kind="turn">
          turn complete{item.tokens !== undefined ? ` · ${item.tokens.toLocaleString()} tokens` : ""}
        </p>
      );
  }
}

function SendBox(props: { disabled: boolean; onSend: (text: string) => Promise<void> }) {
  const [text, setText] = useState("");
  const submit = (e?: Event) => {
    e?.preventDefault();
    const value = text.trim();
    if (!value || props.disabled) return;
    setText("");
    void props.onSend(value);
  };
  return (
    <form class="send" onSubmit={submit}>
      <label for="message" class="visually-hidden">
        Message
      </label>
      <textarea
        id="message"
        rows={3}
        placeholder="Message the agent (Enter sends, Shift+Enter for a new line)"
        value={text}
        onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
        }}
      />
      <button type="submit" disabled={props.disabled || !text.trim()}>
        Send
      </button>
    </form>
  );
}

function Files(props: ViewProps & { id: string; tick: number }) {
  const { client, id } = props;
  const [files, setFiles] = useState<{ list?: Array<{ path: string; size: number }>; source?: string; error?: string }>({});
  const [open, setOpen] = useState<{ path: string; text?: string; content: Uint8Array }>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    client.listFiles(id).then(
      (answer) => live && setFiles({ list: answer.files, source: answer.source }),
      (error) => live && (isSignedOut(error) ? props.onUnauthorized() : setFiles({ error: messageOf(error) })),
    );
    return () => {
      live = false;
    };
  }, [client, id, props.tick, tick]);

  const read = async (path: string) => {
    const file = await client.readFile(id, path);
    return { path, content: file.content, text: asText(file.content) };
  };
  const guard = (work: () => Promise<void>) =>
    work().catch((error) => (isSignedOut(error) ? props.onUnauthorized() : setFiles((f) => ({ ...f, error: messageOf(error) }))));

  return (
    <aside class="workspace" aria-labelledby="files-title">
      <h2 id="files-title">Workspace</h2>
      <p class="row">
        <button type="button" class="quiet small" onClick={() => setTick((t) => t + 1)}>
          Refresh
        </button>
        <button
          type="button"
          class="quiet small"
          onClick={() => guard(async () => download(`${id}.tar.gz`, await new Response(await client.downloadWorkspace(id)).blob()))}
        >
          Download all (.tar.gz)
        </button>
      </p>
      {files.source && <p class="muted small">from the {files.source}</p>}
      <Problem text={files.error} />
      {files.list ? (
        <FileList
          files={files.list}
          onOpen={(path) => guard(async () => setOpen(await read(path)))}
          onDownload={(path) =>
            guard(async () => {
              const file = await read(path);
              download(file.path, file.content);
            })
          }
        />
      ) : (
        !files.error && <Loading />
      )}
      {open && <FilePreview file={open} onClose={() => setOpen(undefined)} />}
    </aside>
  );
}

/** The sandbox's recent output, read when opened (and on Refresh). */
function SandboxLog(props: ViewProps & { id: string }) {
  const [lines, setLines] = useState<SandboxLogLine[]>();
  const [problem, setProblem] = useState<string>();
  const load = () =>
    props.client.logs(props.id).then(
      (l) => (setLines(l), setProblem(undefined)),
      (error) => (isSignedOut(error) ? props.onUnauthorized() : setProblem(messageOf(error))),
    );
  return (
    <details class="log" onToggle={(e) => (e.currentTarget as HTMLDetailsElement).open && load()}>
      <summary>Sandbox log</summary>
      <button type="button" class="quiet small" onClick={load}>
        Refresh
      </button>
      <Problem text={problem} />
      {lines && (lines.length === 0 ? <p class="muted">Nothing logged.</p> : <pre>{lines.map((l) => `${l.stream === "stderr" ? "! " : ""}${l.text}`).join("\n")}</pre>)}
    </details>
  );
}

/** One saved point per completed turn: fork a new session from one, or rewind this one to it. */
function Checkpoints(props: ViewProps & { id: string }) {
  const [list, setList] = useState<Checkpoint[]>();
  const [problem, setProblem] = useState<string>();
  const fail = (error: unknown) => (isSignedOut(error) ? props.onUnauthorized() : setProblem(messageOf(error)));
  const load = () => props.client.listCheckpoints(props.id).then((l) => (setList(l), setProblem(undefined)), fail);
  const fork = (checkpoint: number) =>
    props.client.forkSession(props.id, { checkpoint }).then((session) => {
      location.hash = `#/sessions/${encodeURIComponent(session.id)}`;
    }, fail);
  // The files and the conversation go back to that turn; later turns stay in the history, marked rewound.
  const rewind = (checkpoint: number, turn: number) => {
    if (!confirm(`Rewind this session to turn ${turn}? Its files and conversation go back to how they were after that turn.`)) return;
    props.client.rewindSession(props.id, checkpoint).then(() => location.reload(), fail);
  };
  return (
    <details class="checkpoints" onToggle={(e) => (e.currentTarget as HTMLDetailsElement).open && load()}>
      <summary>Checkpoints</summary>
      <Problem text={problem} />
      {list &&
        (list.length === 0 ? (
          <p class="muted">None yet: each completed turn makes one.</p>
        ) : (
          <ol class="files">
            {list.map((c) => (
              <li>
                <span>
                  turn {c.turn}
                  {c.prompt ? `: ${c.prompt.slice(0, 40)}` : ""}
                  {c.rewound ? " (rewound)" : ""}
                </span>
                <button type="button" class="quiet small" aria-label={`Fork at turn ${c.turn}`} onClick={() => fork(c.checkpoint)}>
                  Fork here
                </button>
                {!c.rewound && (
                  <button type="button" class="quiet small" aria-label={`Rewind to turn ${c.turn}`} onClick={() => rewind(c.checkpoint, c.turn)}>
                    Rewind here
                  </button>
                )}
              </li>
            ))}
          </ol>
        ))}
    </details>
  );
}
