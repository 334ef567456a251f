//! The committer: the batches of every partition a replica owns, applied as many at a time
//! as are waiting, in one transaction each time.

use super::*;

/// One batch handed to the committer, and where its outcome goes.
pub(super) struct Submission {
    pub(super) facts: Vec<EventEnvelope>,
    pub(super) done: oneshot::Sender<Result<(), ApplyError>>,
}

/// Applies the batches of every partition a replica owns, as many at a time as are waiting,
/// in one transaction each time.
pub(super) struct Committer<A> {
    pub(super) applier: Arc<A>,
    pub(super) pool: PgPool,
    /// The database-operation name its transactions are timed under (`projector.apply`).
    pub(super) operation: String,
    pub(super) metrics: ProjectorMetrics,
    /// How long after a transaction's end the next one waits for batches to gather.
    pub(super) gather: Duration,
    /// A worker's largest batch: one this full means its stream is behind, and nothing is
    /// gained by waiting.
    pub(super) batch_size: usize,
}

impl<A: Applier> Committer<A> {
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Submission>) {
        let mut last = tokio::time::Instant::now();
        while let Some(first) = queue.recv().await {
            // Under load, batches arrive while a transaction runs: waiting out the rest of
            // `gather` since the last one lets the next take more of them (fewer, larger
            // transactions); after a pause the first batch goes at once, and so does a full
            // one (catching up, waiting would only cap the rate: 250 ms between
            // transactions held the analytics catch-up to a third).
            if first.facts.len() < self.batch_size {
                tokio::time::sleep_until(last + self.gather).await;
            }
            let mut waiting = vec![first];
            while let Ok(next) = queue.try_recv() {
                waiting.push(next);
            }
            self.commit_waiting(waiting).await;
            last = tokio::time::Instant::now();
        }
    }

    /// Commits the batches waiting together, answering each; if that fails, each on its
    /// own, so the others commit and the failing one's worker handles its own failure.
    pub(super) async fn commit_waiting(&self, mut waiting: Vec<Submission>) {
        if waiting.len() == 1 {
            let Submission { facts, done } = waiting.remove(0);
            let _ = done.send(self.commit(facts).await);
            return;
        }
        let together: Vec<EventEnvelope> = waiting.iter().flat_map(|s| s.facts.clone()).collect();
        if self.commit(together).await.is_ok() {
            for submission in waiting {
                let _ = submission.done.send(Ok(()));
            }
            return;
        }
        for Submission { facts, done } in waiting {
            let _ = done.send(self.commit(facts).await);
        }
    }

    /// Applies `facts` in one committed transaction and records the metrics.
    pub(super) async fn commit(&self, facts: Vec<EventEnvelope>) -> Result<(), ApplyError> {
        let oldest = facts.iter().map(|f| f.recorded_at).min();
        let _timer = keh_platform::metrics::db_timer(&self.operation);
        let mut tx = self.pool.begin().await?;
        let applied = self.applier.apply(&mut tx, facts).await?;
        tx.commit().await?;
        self.metrics.applied.inc_by(applied.applied);
        self.metrics.duplicates.inc_by(applied.duplicates);
        self.metrics.repaired.inc_by(applied.repaired);
        if let Some(oldest) = oldest {
            self.metrics
                .lag
                .observe((chrono::Utc::now() - oldest).as_seconds_f64().max(0.0));
        }
        Ok(())
    }
}
