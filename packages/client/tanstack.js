// TanStack Query wiring: events invalidate the queries they affect, a burst coalesced into one
// refetch per key; a snapshot that carries the whole state of its query is written into the
// cache, so nothing is refetched at all.
//
// Why coalesce here: `invalidateQueries` cancels a refetch in flight and starts another, so 50
// order events in a second would start 50 requests for the same panel. Keys are gathered for a
// short window and each is invalidated once. No dependency on TanStack itself: the query client
// is passed in (anything with `invalidateQueries` and `setQueryData`).

/**
 * Connects a `Switchyard` client to a TanStack `QueryClient`. Returns a function that
 * disconnects (and drops anything not yet invalidated).
 *
 * rules.invalidate: { [eventType]: queryKey[] | (event) => queryKey[] }
 * rules.set:        { [eventType]: (event) => [queryKey, data] | null }
 * options.windowMs: how long a burst is gathered (default 50 ms; 0 = the next macrotask).
 */
export function connectQueryClient(client, queryClient, rules = {}, options = {}) {
  const windowMs = options.windowMs ?? 50;
  const setTimer = options.setTimeout ?? globalThis.setTimeout.bind(globalThis);
  const clearTimer = options.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
  const pending = new Map();
  let timer = null;

  const flush = () => {
    timer = null;
    const keys = [...pending.values()];
    pending.clear();
    for (const queryKey of keys) queryClient.invalidateQueries({ queryKey });
  };

  const offs = [];
  for (const [type, keys] of Object.entries(rules.invalidate ?? {})) {
    offs.push(
      client.on(type, (event) => {
        for (const queryKey of typeof keys === 'function' ? (keys(event) ?? []) : keys) {
          pending.set(JSON.stringify(queryKey), queryKey);
        }
        if (pending.size && timer === null) timer = setTimer(flush, windowMs);
      }),
    );
  }
  for (const [type, entry] of Object.entries(rules.set ?? {})) {
    offs.push(
      client.on(type, (event) => {
        const pair = entry(event);
        if (pair) queryClient.setQueryData(pair[0], pair[1]);
      }),
    );
  }
  return () => {
    offs.forEach((off) => off());
    if (timer !== null) clearTimer(timer);
    timer = null;
    pending.clear();
  };
}

/** For `dashboard:refresh-required`: one query key per section it names, under `prefix`. */
export const sections =
  (prefix = ['dashboard']) =>
  (event) =>
    event.data?.sections?.length ? event.data.sections.map((s) => [...prefix, s]) : [prefix]; // none named: all
