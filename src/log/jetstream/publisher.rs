//! Where this node's messages leave for JetStream, and where their acks come back.
//!
//! A JetStream publish is a core NATS message with a reply subject: the stream's leader answers
//! there once the message is stored. The client library's JetStream publish makes each message a
//! request of its own (a fresh inbox, a response map entry, a oneshot and a timer per message),
//! which at the rates of a busy node cost about as much of our CPU as the rest of a publish.
//! Here a group of messages is sent under one reply prefix, `<inbox>.<group>.<index>`, and one
//! subscription of this node's reads every ack and files it by group and index: per message
//! there is only the publish and the ack's parse.
//!
//! At most [`WINDOW`] messages wait for acks at any time (a group takes its permits before
//! any message leaves, all at once, so groups never wait on each other's permits).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Messages in flight per node before a sender waits for acks. A group takes all its permits
/// at once, so a burst waits until that many are free: with 4,096 the pipeline to JetStream
/// drained between `PublishStream` bursts (up to 4,096 events each) and a node stored 91–99 k
/// events/s on the backplane bench; 8,192 gave 105–109 k, 16,384 gave 116–121 k.
pub(super) const WINDOW: usize = 16_384;

/// One message for JetStream.
#[derive(Clone)]
pub(super) struct Outgoing {
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
}

impl Outgoing {
    /// A message carrying `Nats-Msg-Id: id`, so JetStream stores it once however often it is sent.
    pub(super) fn with_id(subject: String, id: &str, payload: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        Self { subject, headers, payload }
    }
}

/// What JetStream answered for one message: its stream sequence and whether it was stored
/// before (same `Nats-Msg-Id`), or why it was not stored.
pub(super) type Answer = Result<Ack, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ack {
    pub(super) sequence: u64,
    pub(super) duplicate: bool,
}

/// Sends groups of messages and collects their answers. Cheap to clone.
#[derive(Clone)]
pub(super) struct Publisher {
    client: async_nats::Client,
    /// `<inbox>`: every reply subject of this node's publishes starts with it.
    prefix: Arc<str>,
    window: Arc<Semaphore>,
    groups: Arc<Groups>,
    next: Arc<AtomicU64>,
}

/// The groups waiting for acks, by group number.
type Groups = Mutex<HashMap<u64, Arc<Group>>>;

/// The answers of one group's messages, filled in as they come.
struct Group {
    answers: Mutex<Vec<Option<Answer>>>,
    left: AtomicUsize,
    done: Notify,
}

impl Group {
    /// Files the answer for message `index`; the first answer for it wins.
    fn answer(&self, index: usize, answer: Answer) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot @ None) = answers.get_mut(index) else { return };
        *slot = Some(answer);
        drop(answers);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// A group on its way: its answers, once they are all in or the wait is over.
pub(super) struct Pending {
    number: u64,
    group: Arc<Group>,
    groups: Arc<Groups>,
    _permits: OwnedSemaphorePermit,
}

impl Pending {
    /// Each message's answer, in the order sent; `None` for a message not answered within
    /// `wait` (lost with a leader, say). Late answers are dropped.
    pub(super) async fn answers(self, wait: Duration) -> Vec<Option<Answer>> {
        if self.group.left.load(Ordering::Acquire) > 0 {
            let _ = tokio::time::timeout(wait, self.group.done.notified()).await;
        }
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.number);
        std::mem::take(&mut *self.group.answers.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Publisher {
    /// Subscribes to this node's acks and starts filing them.
    pub(super) async fn start(client: async_nats::Client) -> Result<(Self, tokio::task::JoinHandle<()>), String> {
        let prefix: Arc<str> = client.new_inbox().into();
        let acks = client.subscribe(format!("{prefix}.>")).await.map_err(|e| e.to_string())?;
        let groups: Arc<Groups> = Arc::default();
        let reader = tokio::spawn(file_acks(acks, prefix.clone(), groups.clone()));
        let window = Arc::new(Semaphore::new(WINDOW));
        Ok((Self { client, prefix, window, groups, next: Arc::default() }, reader))
    }

    /// Sends `messages` (at most [`WINDOW`]) in order, once permits for all of them are free.
    /// `None` when the connection is closed for good.
    pub(super) async fn send(&self, messages: Vec<Outgoing>) -> Option<Pending> {
        assert!(messages.len() <= WINDOW, "a group larger than the window would wait forever");
        let permits = self.window.clone().acquire_many_owned(messages.len() as u32).await.ok()?;
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let group = Arc::new(Group {
            answers: Mutex::new(vec![None; messages.len()]),
            left: AtomicUsize::new(messages.len()),
            done: Notify::new(),
        });
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).insert(number, group.clone());
        let pending = Pending { number, group: group.clone(), groups: self.groups.clone(), _permits: permits };
        for (index, m) in messages.into_iter().enumerate() {
            let reply = format!("{}.{number}.{index}", self.prefix);
            if let Err(e) = self.client.publish_with_reply_and_headers(m.subject, reply, m.headers, m.payload).await {
                group.answer(index, Err(e.to_string()));
            }
        }
        Some(pending)
    }
}

/// JetStream's answer to a publish.
#[derive(serde::Deserialize)]
struct Reply {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    error: Option<ReplyError>,
}

#[derive(serde::Deserialize)]
struct ReplyError {
    #[serde(default)]
    description: String,
}

/// Reads every ack to this node and files it with its group. Acks of one group mostly come
/// together, so the last group found is kept at hand.
async fn file_acks(mut acks: async_nats::Subscriber, prefix: Arc<str>, groups: Arc<Groups>) {
    let mut last: Option<(u64, Arc<Group>)> = None;
    while let Some(m) = acks.next().await {
        let Some((number, index)) = addressed(&m.subject, &prefix) else { continue };
        if last.as_ref().is_none_or(|(n, _)| *n != number) {
            last = groups.lock().unwrap_or_else(|e| e.into_inner()).get(&number).map(|g| (number, g.clone()));
        }
        let Some((_, group)) = &last else { continue };
        group.answer(index, answer(&m));
    }
}

/// The group and index of an ack's subject, `<prefix>.<group>.<index>`.
fn addressed(subject: &str, prefix: &str) -> Option<(u64, usize)> {
    let (number, index) = subject.strip_prefix(prefix)?.strip_prefix('.')?.split_once('.')?;
    Some((number.parse().ok()?, index.parse().ok()?))
}

fn answer(m: &async_nats::Message) -> Answer {
    match m.status {
        Some(StatusCode::NO_RESPONDERS) => return Err("no responders: the stream has no leader".into()),
        Some(s) if s != StatusCode::OK => {
            return Err(format!("status {s}: {}", m.description.as_deref().unwrap_or_default()));
        }
        _ => {}
    }
    match serde_json::from_slice::<Reply>(&m.payload) {
        Ok(Reply { error: Some(e), .. }) => Err(e.description),
        Ok(Reply { seq, duplicate, .. }) if seq > 0 => Ok(Ack { sequence: seq, duplicate }),
        Ok(_) => Err("an ack without a sequence".into()),
        Err(e) => Err(format!("unreadable ack: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_name_their_group_and_index() {
        assert_eq!(addressed("_INBOX.abc.7.255", "_INBOX.abc"), Some((7, 255)));
        assert_eq!(addressed("_INBOX.abcd.7.255", "_INBOX.abc"), None);
        assert_eq!(addressed("_INBOX.abc.7", "_INBOX.abc"), None);
        assert_eq!(addressed("_INBOX.abc.x.1", "_INBOX.abc"), None);
    }

    #[test]
    fn a_group_takes_the_first_answer_for_each_message_and_says_when_all_are_in() {
        let g = Group { answers: Mutex::new(vec![None, None]), left: AtomicUsize::new(2), done: Notify::new() };
        g.answer(0, Ok(Ack { sequence: 5, duplicate: false }));
        g.answer(0, Err("late".into()));
        g.answer(7, Err("no such message".into()));
        assert_eq!(g.left.load(Ordering::Acquire), 1);
        g.answer(1, Err("no responders".into()));
        assert_eq!(g.left.load(Ordering::Acquire), 0);
        let answers = g.answers.lock().unwrap().clone();
        assert_eq!(answers, vec![Some(Ok(Ack { sequence: 5, duplicate: false })), Some(Err("no responders".into()))]);
    }
}
