//! Acknowledging QoS 1/2 messages once their journal records are durable:
//! the source hands batches of packet ids to a task beside the poll loop,
//! which syncs the journal file and then sends the PUBACKs. Nothing whose
//! write or sync failed is acknowledged (docs/durability.md §2).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use crate::ops::metrics::Metrics;
use crate::state::journal::{Journal, JournalError};

/// Most acknowledgement batches queued for the ack task. Every batch holds
/// at least one unacknowledged packet id, and a session has at most 65,535
/// of those at once (MQTT packet ids are 16-bit), so within one connection
/// the queue cannot fill; the channel allocates only what is queued.
pub(super) const ACK_QUEUE: usize = 65_536;

/// Messages acknowledged after one journal sync.
pub(super) struct AckBatch {
    /// Connection the messages came on; acks for an older one are not sent
    /// (the broker redelivers those messages, which the journal absorbs).
    epoch: u64,
    sync: Option<std::fs::File>,
    acks: Vec<(u16, QoS)>,
}

/// What `ack`/`try_ack` need of a delivered message: its packet id and QoS.
pub(super) fn ack_request(pkid: u16, qos: QoS) -> rumqttc::Publish {
    let mut p = rumqttc::Publish::new("", qos, Vec::<u8>::new());
    p.pkid = pkid;
    p
}

/// Sends acknowledgements once their journal records are durable. Runs
/// beside the poll loop: awaiting `ack` inside it would deadlock when the
/// request channel is full (docs/architecture.md §7).
pub(super) async fn ack_task(
    client: AsyncClient,
    mut rx: mpsc::Receiver<AckBatch>,
    epoch: Arc<AtomicU64>,
    sync_failed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let mut batches = Vec::new();
    while rx.recv_many(&mut batches, 64).await > 0 {
        // One sync per file covers every batch gathered meanwhile.
        let files: Vec<std::fs::File> = batches.iter_mut().filter_map(|b| b.sync.take()).collect();
        if !files.is_empty() {
            metrics.journal_syncs.fetch_add(files.len() as u64, Relaxed);
            let synced = tokio::task::spawn_blocking(move || {
                files.iter().try_for_each(std::fs::File::sync_data)
            })
            .await;
            if !matches!(synced, Ok(Ok(()))) {
                // Not durable: not acknowledged. The source stalls intake
                // and, once the disk is back, reconnects for redelivery.
                sync_failed.store(true, Relaxed);
                batches.clear();
                continue;
            }
        }
        for b in batches.drain(..) {
            if b.epoch != epoch.load(Relaxed) {
                continue;
            }
            for (pkid, qos) in b.acks {
                if client.ack(&ack_request(pkid, qos)).await.is_err() {
                    return;
                }
                metrics.acks_sent.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Makes the journaled messages durable (in the ack task) and hands their
/// acknowledgements over.
///
/// # Errors
/// The journal cannot write: `unacked` is emptied without acknowledging
/// anything (the journal dropped those records; the broker redelivers
/// them after the caller's stall).
pub(super) fn commit_journal(
    journal: &mut Journal,
    unacked: &mut Vec<(u16, QoS)>,
    epoch: u64,
    acks: &mpsc::Sender<AckBatch>,
    metrics: &Metrics,
) -> Result<(), JournalError> {
    if unacked.is_empty() {
        return Ok(());
    }
    let sync = journal.commit();
    metrics.journal_bytes.store(journal.bytes(), Relaxed);
    let sync = match sync {
        Ok(s) => s,
        Err(e) => {
            unacked.clear();
            return Err(e);
        }
    };
    let batch = AckBatch {
        epoch,
        sync,
        acks: std::mem::take(unacked),
    };
    if let Err(mpsc::error::TrySendError::Full(b)) = acks.try_send(batch) {
        // Only when the ack task is stuck across reconnects: the broker
        // redelivers these messages and the journal absorbs the repeats.
        metrics.journal_errors.fetch_add(1, Relaxed);
        tracing::error!(
            messages = b.acks.len(),
            "acknowledgement queue full; the broker will redeliver these messages"
        );
    }
    Ok(())
}

/// At shutdown, what was journaled is synced and acknowledged, best effort
/// (otherwise the broker redelivers it at the next start; duplicates are
/// harmless).
pub(super) fn ack_at_shutdown(
    journal: &mut Journal,
    unacked: &mut Vec<(u16, QoS)>,
    client: &AsyncClient,
) {
    if unacked.is_empty() {
        return;
    }
    if let Ok(sync) = journal.commit()
        && sync.is_none_or(|f| f.sync_data().is_ok())
    {
        for (pkid, qos) in unacked.drain(..) {
            if client.try_ack(&ack_request(pkid, qos)).is_err() {
                break;
            }
        }
    }
}
