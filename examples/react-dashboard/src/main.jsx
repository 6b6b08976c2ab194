// The page: one QueryClient, one Switchyard connection (the provider), the dashboard beneath.
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { SwitchyardProvider } from '@switchyard/client/react';
import { App } from './App.jsx';

// Who this page is: a subscribe token in the fragment (`#token=…`, never sent to a server or
// written to its logs); in a real app, a function that asks your back end for one. `?url=`
// when Switchyard is on another origin (add this page's origin to `auth.cors_origins`).
const token = new URLSearchParams(location.hash.slice(1)).get('token') ?? '';
const api = { url: new URLSearchParams(location.search).get('url') ?? '', token };

// Queries are refetched when an event says they changed, not on a timer or on focus.
const queryClient = new QueryClient({
  defaultOptions: { queries: { staleTime: Infinity, refetchOnWindowFocus: false } },
});

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <QueryClientProvider client={queryClient}>
      {/* channels: [] is every channel the token may read (dashboard, alerts, jobs/…). */}
      <SwitchyardProvider options={{ url: api.url, token: () => api.token, channels: [] }}>
        <App api={api} />
      </SwitchyardProvider>
    </QueryClientProvider>
  </StrictMode>,
);
