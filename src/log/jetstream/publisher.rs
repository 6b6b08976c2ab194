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
//! At most [`WINDOW`] messages wait for acks at any time: each message takes a permit before it
//! leaves, and its answer (or the end of its sender's wait) gives it back.

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
use tokio::sync::{Notify, Semaphore};

/// Messages in flight per node before a sender waits for acks. JetStream stores faster the more
/// it has in hand: on the backplane bench a node stored 106–109 k events/s with 4,096 in flight
/// and 117–122 k with 16,384 (JetStream's own client: 103–134 k at 256, 141–163 k at 4,096).
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
    /// Where an answered message's permit goes back.
    window: Arc<Semaphore>,
}

impl Group {
    /// Files the answer for message `index` (the first answer for it wins) and gives its
    /// window permit back.
    fn answer(&self, index: usize, answer: Answer) {
        if self.fill(index, answer) {
            self.window.add_permits(1);
        }
    }

    /// Files an answer without a permit to give back; whether it was the first for `index`.
    fn fill(&self, index: usize, answer: Answer) -> bool {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot @ None) = answers.get_mut(index) else { return false };
        *slot = Some(answer);
        drop(answers);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
        true
    }

    /// Answers every message still unanswered with `why` and gives their permits back: their
    /// acks are lost, or nobody waits for them any more.
    fn settle(&self, why: &str) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let mut settled = 0;
        for slot in answers.iter_mut().filter(|a| a.is_none()) {
            *slot = Some(Err(why.to_owned()));
            settled += 1;
        }
        drop(answers);
        self.left.fetch_sub(settled, Ordering::AcqRel);
        self.window.add_permits(settled);
    }
}

/// A group on its way: its answers, once they are all in or the wait is over. Dropped unread
/// (its publisher went away), it stops waiting and gives its permits back.
pub(super) struct Pending {
    number: u64,
    group: Arc<Group>,
    groups: Arc<Groups>,
}

impl Pending {
    /// Each message's answer, in the order sent; a message not answered within `wait` (lost
    /// with a leader, say) answers an error. Late answers are dropped.
    pub(super) async fn answers(self, wait: Duration) -> Vec<Answer> {
        if self.group.left.load(Ordering::Acquire) > 0 {
            let _ = tokio::time::timeout(wait, self.group.done.notified()).await;
        }
        self.group.settle(&format!("no ack within {wait:?}"));
        let answers = std::mem::take(&mut *self.group.answers.lock().unwrap_or_else(|e| e.into_inner()));
        answers.into_iter().map(|a| a.unwrap_or_else(|| Err("unanswered".into()))).collect()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.number);
        self.group.settle("nobody waits for this ack");
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

    /// Sends `messages` in order, each once a window permit is free (its ack gives it back, so
    /// the pipeline to JetStream never drains between groups). A message that finds no permit
    /// within `wait` (acks lost, a leader gone) is not sent and answers an error.
    pub(super) async fn send(&self, messages: Vec<Outgoing>, wait: Duration) -> Pending {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let group = Arc::new(Group {
            answers: Mutex::new(vec![None; messages.len()]),
            left: AtomicUsize::new(messages.len()),
            done: Notify::new(),
            window: self.window.clone(),
        });
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).insert(number, group.clone());
        let pending = Pending { number, group: group.clone(), groups: self.groups.clone() };
        let deadline = tokio::time::Instant::now() + wait;
        for (index, m) in messages.into_iter().enumerate() {
            // A free permit is taken at once: the timed wait (a timer) only when the window is full.
            let permit = match self.window.try_acquire() {
                Ok(permit) => Some(permit),
                Err(_) => tokio::time::timeout_at(deadline, self.window.acquire()).await.ok().and_then(Result::ok),
            };
            match permit {
                Some(permit) => permit.forget(),
                None => {
                    group.fill(index, Err(format!("{WINDOW} publishes unacknowledged for {wait:?}")));
                    continue;
                }
            }
            let reply = format!("{}.{number}.{index}", self.prefix);
            if let Err(e) = self.client.publish_with_reply_and_headers(m.subject, reply, m.headers, m.payload).await {
                group.answer(index, Err(e.to_string()));
            }
        }
        pending
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

    /// A sender that goes away (its gRPC stream was dropped mid-append) leaves nothing behind:
    /// its group leaves the map and the permits of its unanswered messages come back.
    #[test]
    fn an_abandoned_group_frees_its_entry_and_its_permits() {
        let window = Arc::new(Semaphore::new(WINDOW - 2));
        let group = Arc::new(Group {
            answers: Mutex::new(vec![None, None]),
            left: AtomicUsize::new(2),
            done: Notify::new(),
            window: window.clone(),
        });
        let groups: Arc<Groups> = Arc::default();
        groups.lock().unwrap().insert(9, group.clone());
        let pending = Pending { number: 9, group: group.clone(), groups: groups.clone() };
        group.answer(0, Ok(Ack { sequence: 1, duplicate: false }));
        drop(pending);
        assert!(groups.lock().unwrap().is_empty());
        assert_eq!(window.available_permits(), WINDOW);
        // Its last ack arriving late gives nothing back twice.
        group.answer(1, Ok(Ack { sequence: 2, duplicate: false }));
        assert_eq!(window.available_permits(), WINDOW);
    }

    #[test]
    fn a_group_takes_the_first_answer_for_each_message_and_says_when_all_are_in() {
        let window = Arc::new(Semaphore::new(0));
        let g = Group {
            answers: Mutex::new(vec![None, None, None]),
            left: AtomicUsize::new(3),
            done: Notify::new(),
            window: window.clone(),
        };
        g.answer(0, Ok(Ack { sequence: 5, duplicate: false }));
        g.answer(0, Err("late".into()));
        g.answer(7, Err("no such message".into()));
        assert_eq!((g.left.load(Ordering::Acquire), window.available_permits()), (2, 1));
        g.answer(1, Err("no responders".into()));
        // The third ack is lost: settling answers it and gives its permit back, once.
        g.settle("no ack");
        g.answer(2, Ok(Ack { sequence: 6, duplicate: false }));
        g.settle("no ack");
        assert_eq!((g.left.load(Ordering::Acquire), window.available_permits()), (0, 3));
        let answers = g.answers.lock().unwrap().clone();
        assert_eq!(
            answers,
            vec![
                Some(Ok(Ack { sequence: 5, duplicate: false })),
                Some(Err("no responders".into())),
                Some(Err("no ack".into()))
            ]
        );
    }
}
