//! `payment_view`: one row per order that has a payment, with its status, amount, the
//! provider's authorization id, the decline or void reason and when each step happened.
//!
//! A payment stream is named by its order ([`payment_id`]), but only its first event
//! (`PaymentAuthorized` or `PaymentDeclined`) carries the order's id; the private helper
//! table remembers which order each stream pays for, so a capture or void finds its row.
//! The stream's events arrive in version order (the engine fills gaps from the store), so
//! no other stream's arrival order matters.

use chrono::{DateTime, Utc};
use orderflow_domain::payment::{Payment, PaymentEvent, PaymentStatus};
use orderflow_domain::saga::payment_id;
use orderflow_domain::{Aggregate, Currency, Money};
use orderflow_store::lookup::by_keys;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::cache::Cache;
use crate::error::unknown_value;
use crate::event::{Envelope, Payload};
use crate::projection::BoxFuture;
use crate::{Projection, Refusal, Rows, Tables};

/// Orders' payments: authorized, declined, captured or voided.
#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentView;

impl Projection for PaymentView {
    fn name(&self) -> &'static str {
        "payment_view"
    }

    fn stream_types(&self) -> &'static [&'static str] {
        &[Payment::STREAM_TYPE]
    }

    crate::projection::table_names!("payment_view", "payment_view_payments");

    fn lock_id(&self) -> i32 {
        4
    }

    fn rows(&self, complete: bool) -> Box<dyn Rows> {
        Box::new(PaymentViewRows {
            payments: Cache::new(complete),
        })
    }
}

#[derive(Debug, Clone)]
struct PaymentRow {
    order_id: Uuid,
    status: PaymentStatus,
    amount: Money,
    authorization_id: Option<String>,
    decline_reason: Option<String>,
    void_reason: Option<String>,
    authorized_at: Option<DateTime<Utc>>,
    declined_at: Option<DateTime<Utc>>,
    captured_at: Option<DateTime<Utc>>,
    voided_at: Option<DateTime<Utc>>,
    version: i32,
    updated_at: DateTime<Utc>,
}

impl PaymentRow {
    /// The row a payment stream's first event starts.
    fn started(
        envelope: &Envelope,
        order_id: Uuid,
        amount: Money,
        status: PaymentStatus,
    ) -> Result<Self, Refusal> {
        if payment_id(order_id) != envelope.stream_id {
            return Err(Refusal::PaymentOfAnotherOrder(order_id));
        }
        Ok(Self {
            order_id,
            status,
            amount,
            authorization_id: None,
            decline_reason: None,
            void_reason: None,
            authorized_at: None,
            declined_at: None,
            captured_at: None,
            voided_at: None,
            version: envelope.version,
            updated_at: envelope.recorded_at,
        })
    }
}

/// The payments a batch touches, keyed by payment stream id.
#[derive(Debug)]
struct PaymentViewRows {
    payments: Cache<PaymentRow>,
}

impl Rows for PaymentViewRows {
    fn load<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        tables: Tables,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.fetch(conn, tables, events))
    }

    fn apply(&mut self, event: &Envelope) -> Result<(), Refusal> {
        match &event.payload {
            Payload::Payment(payment_event) => self.apply_payment(event, payment_event),
            Payload::Order(_) | Payload::User(_) | Payload::Product(_) => Ok(()),
        }
    }

    fn flush<'a>(
        &'a mut self,
        conn: &'a mut PgConnection,
        tables: Tables,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(self.write(conn, tables))
    }

    fn cached(&self) -> usize {
        self.payments.len()
    }

    fn clear(&mut self) {
        self.payments.clear();
    }
}

impl PaymentViewRows {
    /// Loads the payments of the streams `events` belong to, through the helper's orders.
    async fn fetch(
        &mut self,
        conn: &mut PgConnection,
        tables: Tables,
        events: &[Envelope],
    ) -> Result<(), sqlx::Error> {
        let streams = events.iter().filter_map(|event| match &event.payload {
            Payload::Payment(_) => Some(event.stream_id),
            _ => None,
        });
        let missing = self.payments.missing(streams);
        if missing.is_empty() {
            return Ok(());
        }
        let sql = by_keys(&format!(
            "select h.payment_id, p.order_id, p.status, p.amount_minor, p.currency, \
             p.authorization_id, p.decline_reason, p.void_reason, p.authorized_at, \
             p.declined_at, p.captured_at, p.voided_at, p.version, p.updated_at \
             from {} h join {} p on p.order_id = h.order_id where h.payment_id = k.id",
            tables.helper, tables.view
        ));
        let rows = sqlx::query(&sql)
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await?;
        let found = rows
            .iter()
            .map(|row| Ok((row.try_get("payment_id")?, payment_row(row)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        self.payments.fill(&missing, found);
        Ok(())
    }

    fn apply_payment(&mut self, envelope: &Envelope, event: &PaymentEvent) -> Result<(), Refusal> {
        let id = envelope.stream_id;
        let at = envelope.recorded_at;
        let existing = self.payments.get(&id).cloned();
        let row = match (event, existing) {
            (
                PaymentEvent::PaymentAuthorized {
                    order_id,
                    amount,
                    authorization_id,
                },
                None,
            ) => PaymentRow {
                authorization_id: Some(authorization_id.clone()),
                authorized_at: Some(at),
                ..PaymentRow::started(envelope, *order_id, *amount, PaymentStatus::Authorized)?
            },
            (
                PaymentEvent::PaymentDeclined {
                    order_id,
                    amount,
                    reason,
                },
                None,
            ) => PaymentRow {
                decline_reason: Some(reason.clone()),
                declined_at: Some(at),
                ..PaymentRow::started(envelope, *order_id, *amount, PaymentStatus::Declined)?
            },
            (PaymentEvent::PaymentAuthorized { .. } | PaymentEvent::PaymentDeclined { .. }, _) => {
                return Err(Refusal::PaymentAlreadyStarted)
            }
            (_, None) => return Err(Refusal::PaymentNotStarted),
            (_, Some(row)) if row.status != PaymentStatus::Authorized => {
                return Err(Refusal::PaymentNotAuthorized(row.status))
            }
            (PaymentEvent::PaymentCaptured { amount }, Some(row)) => PaymentRow {
                status: PaymentStatus::Captured,
                amount: *amount,
                captured_at: Some(at),
                ..row
            },
            (PaymentEvent::PaymentVoided { reason }, Some(row)) => PaymentRow {
                status: PaymentStatus::Voided,
                void_reason: Some(reason.clone()),
                voided_at: Some(at),
                ..row
            },
        };
        self.payments.put(
            id,
            PaymentRow {
                version: envelope.version,
                updated_at: at,
                ..row
            },
        );
        Ok(())
    }

    /// Writes every changed payment: the helper's stream → order, then the view.
    async fn write(&mut self, conn: &mut PgConnection, tables: Tables) -> Result<(), sqlx::Error> {
        let (payments, _) = self.payments.changes();
        if payments.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = payments.iter().map(|(id, _)| *id).collect();
        let rows = || payments.iter().map(|(_, row)| *row);
        let sql = format!(
            "insert into {} (payment_id, order_id) \
             select * from unnest($1::uuid[], $2::uuid[]) \
             on conflict (payment_id) do nothing",
            tables.helper
        );
        sqlx::query(&sql)
            .bind(&ids)
            .bind(rows().map(|r| r.order_id).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;

        let sql = format!(
            "insert into {} (order_id, payment_id, status, amount_minor, currency, \
               authorization_id, decline_reason, void_reason, authorized_at, declined_at, \
               captured_at, voided_at, version, updated_at) \
             select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::text[], \
               $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], \
               $11::timestamptz[], $12::timestamptz[], $13::int[], $14::timestamptz[]) \
             on conflict (order_id) do update set payment_id = excluded.payment_id, \
               status = excluded.status, amount_minor = excluded.amount_minor, \
               currency = excluded.currency, authorization_id = excluded.authorization_id, \
               decline_reason = excluded.decline_reason, void_reason = excluded.void_reason, \
               authorized_at = excluded.authorized_at, declined_at = excluded.declined_at, \
               captured_at = excluded.captured_at, voided_at = excluded.voided_at, \
               version = excluded.version, updated_at = excluded.updated_at",
            tables.view
        );
        sqlx::query(&sql)
            .bind(rows().map(|r| r.order_id).collect::<Vec<_>>())
            .bind(&ids)
            .bind(rows().map(|r| r.status.as_str()).collect::<Vec<_>>())
            .bind(rows().map(|r| r.amount.amount_minor).collect::<Vec<_>>())
            .bind(rows().map(|r| r.amount.currency.code()).collect::<Vec<_>>())
            .bind(
                rows()
                    .map(|r| r.authorization_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows()
                    .map(|r| r.decline_reason.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows().map(|r| r.void_reason.as_deref()).collect::<Vec<_>>())
            .bind(rows().map(|r| r.authorized_at).collect::<Vec<_>>())
            .bind(rows().map(|r| r.declined_at).collect::<Vec<_>>())
            .bind(rows().map(|r| r.captured_at).collect::<Vec<_>>())
            .bind(rows().map(|r| r.voided_at).collect::<Vec<_>>())
            .bind(rows().map(|r| r.version).collect::<Vec<_>>())
            .bind(rows().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        self.payments.mark_clean();
        Ok(())
    }
}

fn payment_row(row: &sqlx::postgres::PgRow) -> Result<PaymentRow, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let currency: String = row.try_get("currency")?;
    let currency = Currency::parse(&currency)
        .map_err(|_| unknown_value("payment_view.currency", &currency))?;
    Ok(PaymentRow {
        order_id: row.try_get("order_id")?,
        status: parse_status(&status)
            .ok_or_else(|| unknown_value("payment_view.status", &status))?,
        amount: Money::new(row.try_get("amount_minor")?, currency),
        authorization_id: row.try_get("authorization_id")?,
        decline_reason: row.try_get("decline_reason")?,
        void_reason: row.try_get("void_reason")?,
        authorized_at: row.try_get("authorized_at")?,
        declined_at: row.try_get("declined_at")?,
        captured_at: row.try_get("captured_at")?,
        voided_at: row.try_get("voided_at")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A status the view stores: every status but pending, which has no events.
fn parse_status(status: &str) -> Option<PaymentStatus> {
    [
        PaymentStatus::Authorized,
        PaymentStatus::Declined,
        PaymentStatus::Captured,
        PaymentStatus::Voided,
    ]
    .into_iter()
    .find(|known| known.as_str() == status)
}
