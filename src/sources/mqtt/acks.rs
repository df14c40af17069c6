//! Acknowledging QoS 1/2 messages once their journal records are durable:
//! the source hands batches of packet ids to a task beside the poll loop,
//! which syncs the journal file and hands the batches back; the poll loop
//! then writes their PUBACKs into the connection together (`send_acks`).
//! Nothing whose write or sync failed is acknowledged (docs/durability.md
//! §2).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rumqttc::{EventLoop, Packet, PubAck, PubRec, QoS};
use tokio::sync::mpsc;

use super::sync_pacer::SyncPacer;
use crate::ops::metrics::Metrics;
use crate::state::journal::{Journal, JournalError};

/// Most acknowledgement batches queued for the ack task, and most synced
/// hand-backs queued for the poll loop. Every batch holds at least one
/// unacknowledged packet id, and a session has at most 65,535 of those at
/// once (MQTT packet ids are 16-bit), so within one connection the queues
/// cannot fill; a channel allocates only what is queued.
const ACK_QUEUE: usize = 65_536;

/// Messages acknowledged after one journal sync.
pub(super) struct AckBatch {
    /// Connection the messages came on; acks for an older one are not sent
    /// (the broker redelivers those messages, which the journal absorbs).
    epoch: u64,
    sync: Option<std::fs::File>,
    acks: Vec<(u16, QoS)>,
}

/// The poll loop's ends of the ack task's queues: batches to sync, and
/// synced batches back.
pub(super) struct AckQueues {
    to_sync: mpsc::Sender<AckBatch>,
    pub(super) synced: mpsc::Receiver<Vec<AckBatch>>,
}

impl AckQueues {
    /// The queues, and the ack task when messages are `journaled` (without
    /// a journal nothing is committed).
    pub(super) fn start(
        journaled: bool,
        sync_failed: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (to_sync, rx) = mpsc::channel(ACK_QUEUE);
        let (synced_tx, synced) = mpsc::channel(ACK_QUEUE);
        if journaled {
            tokio::spawn(ack_task(rx, synced_tx, sync_failed, metrics));
        }
        Self { to_sync, synced }
    }
}

/// Syncs the journal for the batches the source commits and hands them
/// back, durable, for [`send_acks`]. Runs beside the poll loop, which must
/// not wait on the disk.
async fn ack_task(
    mut rx: mpsc::Receiver<AckBatch>,
    synced: mpsc::Sender<Vec<AckBatch>>,
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
        if synced.send(std::mem::take(&mut batches)).await.is_err() {
            return;
        }
    }
}

/// Writes the PUBACKs (PUBRECs for QoS 2) of synced batches into the
/// connection's write buffer and flushes it once: one `write` for all of
/// them. rumqttc's `AsyncClient::ack` would take each through its request
/// channel and flush each on its own, a system call and a loop turn per
/// message (docs/low-rate.md §4). Batches of an older connection, or with
/// no connection, are dropped: the broker redelivers those messages.
/// A write that fails is left to the next poll, which sees the broken
/// connection and reconnects.
pub(super) async fn send_acks(
    eventloop: &mut EventLoop,
    batches: Vec<AckBatch>,
    epoch: u64,
    metrics: &Metrics,
) {
    // rumqttc bounds its own flushes by the connection timeout; here the
    // writes are bounded too: a broker that stops reading fills the socket.
    let timeout = Duration::from_secs(eventloop.network_options.connection_timeout());
    let Some(network) = eventloop.network.as_mut() else {
        return;
    };
    let written = tokio::time::timeout(timeout, async {
        let mut sent = 0u64;
        for (pkid, qos) in batches
            .into_iter()
            .filter(|b| b.epoch == epoch)
            .flat_map(|b| b.acks)
        {
            let packet = match qos {
                QoS::ExactlyOnce => Packet::PubRec(PubRec::new(pkid)),
                _ => Packet::PubAck(PubAck::new(pkid)),
            };
            network.write(packet).await?;
            sent += 1;
        }
        if sent > 0 {
            network.flush().await?;
        }
        Ok::<u64, rumqttc::StateError>(sent)
    })
    .await;
    if let Ok(Ok(sent)) = written {
        metrics.acks_sent.fetch_add(sent, Relaxed);
    }
}

/// Makes the journaled messages durable (in the ack task) and hands their
/// acknowledgements over; on success the pacer learns that it committed.
///
/// # Errors
/// The journal cannot write: `unacked` is emptied without acknowledging
/// anything (the journal dropped those records; the broker redelivers
/// them after the caller's stall).
pub(super) fn commit_journal(
    journal: &mut Journal,
    unacked: &mut Vec<(u16, QoS)>,
    epoch: u64,
    acks: &AckQueues,
    metrics: &Metrics,
    pacer: &mut SyncPacer,
) -> Result<(), JournalError> {
    if unacked.is_empty() {
        pacer.committed(0);
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
    pacer.committed(unacked.len());
    let batch = AckBatch {
        epoch,
        sync,
        acks: std::mem::take(unacked),
    };
    if let Err(mpsc::error::TrySendError::Full(b)) = acks.to_sync.try_send(batch) {
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

/// Most acknowledgements held before they go out whatever the pace: a
/// journal commit, or without a journal a write of them, at once. Under a
/// steady flow the source may not rest for a while.
pub(super) const HELD_ACKS: usize = 1024;

/// Without a journal: holds a message's acknowledgement for the next rest
/// ([`ack_read`]), or writes all held at once when [`HELD_ACKS`] wait.
pub(super) async fn hold_ack(
    eventloop: &mut EventLoop,
    unacked: &mut Vec<(u16, QoS)>,
    ack: (u16, QoS),
    epoch: u64,
    metrics: &Metrics,
) {
    unacked.push(ack);
    if unacked.len() >= HELD_ACKS {
        ack_read(eventloop, unacked, epoch, metrics).await;
    }
}

/// Without a journal: the PUBACKs (PUBRECs) of everything read since the
/// last rest, in one write. The source calls it when it rests, before it
/// may sleep, so a read's acknowledgements go together, and the broker
/// sends what it held back for them while the source sleeps
/// (docs/low-rate.md §4).
pub(super) async fn ack_read(
    eventloop: &mut EventLoop,
    unacked: &mut Vec<(u16, QoS)>,
    epoch: u64,
    metrics: &Metrics,
) {
    let batch = AckBatch {
        epoch,
        sync: None,
        acks: std::mem::take(unacked),
    };
    send_acks(eventloop, vec![batch], epoch, metrics).await;
}

/// At shutdown, what was journaled is synced and acknowledged, best effort
/// (otherwise the broker redelivers it at the next start; duplicates are
/// harmless): the syncs under way finish first (the queue to the ack task
/// is closed, so the task ends after them), then the rest is synced here.
/// Without a journal, what was read since the last rest is acknowledged.
pub(super) async fn ack_at_shutdown(
    journal: Option<&mut Journal>,
    unacked: &mut Vec<(u16, QoS)>,
    acks: AckQueues,
    eventloop: &mut EventLoop,
    epoch: u64,
    metrics: &Metrics,
) {
    let Some(journal) = journal else {
        ack_read(eventloop, unacked, epoch, metrics).await;
        return;
    };
    let AckQueues {
        to_sync,
        mut synced,
    } = acks;
    drop(to_sync);
    let mut done = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(b) = synced.recv().await {
            done.extend(b);
        }
    })
    .await;
    if !unacked.is_empty()
        && let Ok(sync) = journal.commit()
        && sync.is_none_or(|f| f.sync_data().is_ok())
    {
        done.push(AckBatch {
            epoch,
            sync: None,
            acks: std::mem::take(unacked),
        });
    }
    send_acks(eventloop, done, epoch, metrics).await;
}
