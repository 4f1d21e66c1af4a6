import { useCallback, useEffect, useState } from "preact/hooks";
import { isSignedOut, messageOf } from "../api";
import type { ViewProps } from "../main";

/** Loads data with the client; a refused key signs out, other failures show their sentence. */
export function useLoad<T>(props: ViewProps, load: () => Promise<T>, deps: unknown[]): { data?: T; error?: string; reload: () => void } {
  const [state, setState] = useState<{ data?: T; error?: string }>({});
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (data) => live && setState({ data }),
      (error) => {
        if (!live) return;
        if (isSignedOut(error)) props.onUnauthorized();
        else setState((s) => ({ ...s, error: messageOf(error) }));
      },
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

export function Problem(props: { text?: string }) {
  if (!props.text) return null;
  return (
    <p class="problem" role="alert">
      {props.text}
    </p>
  );
}

export function Loading() {
  return <p class="muted">Loading…</p>;
}

export function Status(props: { status: string }) {
  return <span class={`status status-${props.status}`}>{props.status}</span>;
}
