//! The direct SSE path's request-head parser (bytes straight off a socket): any input is an
//! SSE GET naming channels, or left to hyper; never a panic. Channel *names* are checked after
//! it, by the bus (`Channel::new`), as for the hyper path; here: no encoded target is taken
//! (that decoding is hyper's), and a path names one channel or one job.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use switchyard_bridge::sse::direct;

/// The server's own paths, as `serve` gives them to the direct path.
static OWN: LazyLock<Vec<String>> =
    LazyLock::new(|| switchyard_bridge::router::routes().into_iter().map(|r| r.path).collect());

fuzz_target!(|data: &[u8]| {
    if let Some(req) = direct::parse(data, &OWN) {
        let text = String::from_utf8_lossy(data);
        assert!(text.contains("GET /api/sse/"), "only SSE GETs are taken");
        // `/api/sse/subscribe?channels=…` takes names from the query; other paths name one.
        let from_path = !text.contains("GET /api/sse/subscribe");
        for c in req.channels() {
            assert!(!c.is_empty(), "no empty channel");
            assert!(!c.contains(['%', '+']), "no encoded target is taken: {c:?}");
            if from_path {
                match c.strip_prefix("jobs/") {
                    Some(id) => assert!(!id.is_empty() && !id.contains('/'), "a job path names one job: {c:?}"),
                    None => assert!(!c.contains('/'), "a path names one channel: {c:?}"),
                }
            }
        }
    }
});
