//! The payout e-mail worker: sends one mail per payout over SMTP (lettre).
//!
//! A mail moves new → sending → sent, or → failed with a retry time (exponential
//! backoff) until `max_attempts`. Claiming flips the rows to `sending` in one statement
//! (`FOR UPDATE SKIP LOCKED`), so two workers never take the same mail; only a claimed
//! mail is sent, and it is marked sent right after. A crash between the SMTP delivery
//! and the mark leaves it in `sending`, which is never retried on its own: a payout mail
//! is never sent twice.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use popug_eventbus::Outbox;
use popug_proto::popug::accounting::v1 as pb;
use sqlx::PgPool;

use crate::domain::format_day;
use crate::store::mails::{self, ClaimedMail};

/// Mails claimed per round.
const CLAIM_BATCH: i64 = 50;
/// Upper bound of the retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Sends payout mails until stopped.
pub struct Mailer {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: Mailbox,
    /// First retry delay; doubles per attempt.
    pub retry_base: Duration,
    pub max_attempts: i32,
    /// Sleep between rounds when nothing is due.
    pub poll: Duration,
}

impl Mailer {
    /// A mailer talking plain SMTP to `host:port` (a local relay; no TLS).
    pub fn new(pool: PgPool, outbox: Outbox, settings: &crate::Settings) -> anyhow::Result<Mailer> {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.smtp_host)
                .port(settings.smtp_port)
                .timeout(Some(Duration::from_secs(10)))
                .build();
        Ok(Mailer {
            pool,
            outbox,
            transport,
            from: settings.smtp_from.parse()?,
            retry_base: settings.mail_retry_base,
            max_attempts: settings.mail_max_attempts,
            poll: settings.mail_poll_interval,
        })
    }

    /// Rounds until `shutdown`; a round that found work is followed at once by another.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let wait = match self.round().await {
                Ok(0) => self.poll,
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "payout mailer round failed");
                    self.poll
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Claims due mails and sends them; returns how many were claimed.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let claimed = {
            let mut conn = self.pool.acquire().await?;
            mails::claim(&mut conn, CLAIM_BATCH).await?
        };
        for mail in &claimed {
            self.deliver(mail).await?;
        }
        Ok(claimed.len())
    }

    async fn deliver(&self, mail: &ClaimedMail) -> anyhow::Result<()> {
        let outcome = match self.message(mail) {
            Ok(message) => self
                .transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let sent = outcome.is_ok();
        let mut tx = self.pool.begin().await?;
        match outcome {
            Ok(()) => {
                if let Some(sent_at) = mails::mark_sent(&mut tx, mail.entry_id).await? {
                    self.outbox
                        .add(
                            &mut tx,
                            &mail.user_id.to_string(),
                            &pb::PayoutSent {
                                payout_id: mail.entry_id.to_string(),
                                user_id: mail.user_id.to_string(),
                                amount_cents: mail.amount.get(),
                                billing_day: format_day(mail.billing_day),
                                sent_at: Some(popug_grpc::timestamp(sent_at)),
                            },
                        )
                        .await?;
                }
                tracing::info!(payout = mail.entry_id, "payout mail sent");
            }
            Err(error) => {
                let retry = (mail.attempts < self.max_attempts).then(|| {
                    let factor =
                        2u32.saturating_pow(u32::try_from(mail.attempts - 1).unwrap_or(0).min(20));
                    self.retry_base.saturating_mul(factor).min(MAX_BACKOFF)
                });
                tracing::warn!(payout = mail.entry_id, attempts = mail.attempts, %error, ?retry, "payout mail failed");
                mails::mark_failed(&mut tx, mail.entry_id, &error, retry).await?;
            }
        }
        tx.commit().await?;
        self.outbox.notify();
        let status = if sent { "sent" } else { "failed" };
        metrics::counter!(popug_metrics::names::PAYOUT_MAILS, "status" => status).increment(1);
        Ok(())
    }

    fn message(&self, mail: &ClaimedMail) -> Result<Message, String> {
        let to: Mailbox = format!(
            "{} <{}>",
            mail.name.replace(['<', '>', '"'], ""),
            mail.email
        )
        .parse()
        .or_else(|_| mail.email.parse())
        .map_err(|e| format!("bad address {:?}: {e}", mail.email))?;
        let day = format_day(mail.billing_day);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("PopugJira payout for {day}: {}", mail.amount))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(format!(
                "Hello {},\n\nyour balance for {day} was paid out: {} ({} cents).\nPayout id: {}\n\n-- UberPopug Inc accounting\n",
                mail.name,
                mail.amount,
                mail.amount.get(),
                mail.entry_id
            ))
            .map_err(|e| e.to_string())
    }
}
