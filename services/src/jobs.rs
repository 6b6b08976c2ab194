//! A small job-progress reporter any service can use: stage, percent, message, completion and
//! error, as seed 002's workflow events. Events go to `workflow` and `jobs/<job id>` (the job id
//! is the event key), so a browser can follow one job on `/api/sse/jobs/<id>`.
//!
//! Progress is a snapshot (coalesced per job for slow clients); stages, completion and errors
//! are facts. Reporting never fails the job: a lost progress event is logged, not fatal.

use std::{collections::BTreeMap, sync::Arc};

use switchyard::proto::v1::{
    Event, WorkflowCompletion, WorkflowError, WorkflowProgress, WorkflowStage, event::Payload,
};

use crate::sink::Sink;

#[derive(Clone)]
pub struct JobReporter {
    sink: Arc<dyn Sink>,
    tenant: String,
    job_id: String,
    subject: String,
}

impl JobReporter {
    /// `subject` says what the job works on (a connector name, a merchant id).
    pub fn new(sink: Arc<dyn Sink>, tenant: &str, job_id: &str, subject: &str) -> Self {
        Self { sink, tenant: tenant.to_owned(), job_id: job_id.to_owned(), subject: subject.to_owned() }
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    async fn send(&self, payload: Payload) {
        let event = Event {
            tenant: self.tenant.clone(),
            key: self.job_id.clone(),
            source: format!("job:{}", self.subject),
            payload: Some(payload),
            ..Default::default()
        };
        if let Err(error) = self.sink.publish(vec![event]).await {
            tracing::warn!(job = %self.job_id, %error, "job progress not published");
        }
    }

    pub async fn stage(&self, stage: &str, message: &str) {
        self.send(Payload::WorkflowStage(WorkflowStage {
            workflow_id: self.job_id.clone(),
            stage: stage.to_owned(),
            status: "started".into(),
            message: message.to_owned(),
            subject_id: self.subject.clone(),
        }))
        .await
    }

    pub async fn progress(&self, stage: &str, percent: u32, message: &str) {
        self.send(Payload::WorkflowProgress(WorkflowProgress {
            workflow_id: self.job_id.clone(),
            stage: stage.to_owned(),
            percent: percent.min(100),
            message: message.to_owned(),
            subject_id: self.subject.clone(),
        }))
        .await
    }

    pub async fn complete(&self, message: &str, results: BTreeMap<String, String>) {
        self.send(Payload::WorkflowCompletion(WorkflowCompletion {
            workflow_id: self.job_id.clone(),
            stage: "done".into(),
            message: message.to_owned(),
            subject_id: self.subject.clone(),
            results: results.into_iter().collect(),
            r#final: true,
        }))
        .await
    }

    pub async fn fail(&self, stage: &str, error: &str) {
        self.send(Payload::WorkflowError(WorkflowError {
            workflow_id: self.job_id.clone(),
            stage: stage.to_owned(),
            error: error.to_owned(),
            subject_id: self.subject.clone(),
        }))
        .await
    }
}
