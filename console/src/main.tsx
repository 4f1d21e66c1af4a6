import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import type { AshClient } from "../../src/client";
import { checkKey, clientFor, forgetKey, rememberKey, storedKey } from "./api";
import { Overview } from "./views/overview";
import { Agents, AgentPage } from "./views/agents";
import { Sessions } from "./views/sessions";
import { SessionPage } from "./views/session";
import "./style.css";

/** Pages are addressed by the URL's fragment (#/sessions/<id>), so the server serves one page. */
function useRoute(): string[] {
  const read = () => location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const onChange = () => setRoute(read());
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

function SignIn(props: { onSignedIn: (key: string) => void; notice?: string }) {
  const [key, setKey] = useState("");
  const [problem, setProblem] = useState<string | undefined>(props.notice);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const value = key.trim();
    if (!value) return setProblem("Enter an API key.");
    setBusy(true);
    const refused = await checkKey(value);
    setBusy(false);
    if (refused) return setProblem(refused);
    props.onSignedIn(value);
  };
  return (
    <main class="signin">
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Ash console</h1>
        <label for="api-key">API key</label>
        <input id="api-key" name="api-key" type="password" autocomplete="off" autoFocus value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} />
        <p class="hint">Kept in this tab only, and sent only to this server.</p>
        {problem && (
          <p class="problem" role="alert">
            {problem}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}

const PAGES = [
  ["", "Overview"],
  ["agents", "Agents"],
  ["sessions", "Sessions"],
] as const;

function App() {
  const [key, setKey] = useState(storedKey);
  const [notice, setNotice] = useState<string>();
  const route = useRoute();
  const client = useMemo(() => (key ? clientFor(key) : undefined), [key]);

  const signOut = (why?: string) => {
    forgetKey();
    setNotice(why);
    setKey(undefined);
  };

  if (!client) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={(k) => {
          rememberKey(k);
          setNotice(undefined);
          setKey(k);
        }}
      />
    );
  }
  const ctx: ViewProps = { client, onUnauthorized: () => signOut("The key stopped working (revoked or expired): sign in again.") };
  const [page, arg] = route;
  return (
    <>
      <a class="skip" href="#content" onClick={(e) => (e.preventDefault(), document.getElementById("content")?.focus())}>
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Ash</span>
        <nav aria-label="Main">
          {PAGES.map(([path, label]) => (
            <a href={`#/${path}`} aria-current={(page ?? "") === path ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <button class="quiet" type="button" onClick={() => signOut()}>
          Sign out
        </button>
      </header>
      <main id="content" tabIndex={-1}>
        {page === "agents" && arg ? (
          <AgentPage {...ctx} name={arg} />
        ) : page === "agents" ? (
          <Agents {...ctx} />
        ) : page === "sessions" && arg ? (
          <SessionPage key={arg} {...ctx} id={arg} />
        ) : page === "sessions" ? (
          <Sessions {...ctx} />
        ) : (
          <Overview {...ctx} />
        )}
      </main>
    </>
  );
}

export interface ViewProps {
  client: AshClient;
  /** Called when the server refuses the key mid-way. */
  onUnauthorized: () => void;
}

render(<App />, document.getElementById("app")!);
