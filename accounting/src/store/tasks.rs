//! Tasks as the events show them: each one's prices (set by whichever event shows it
//! first, never changed), its text (a placeholder until an event carrying it arrives) and
//! its newest assignment.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Cents, Prices};

/// What an event says about a task's text.
#[derive(Debug, Clone, Copy)]
pub struct TaskText<'a> {
    pub public_id: &'a str,
    pub jira_id: &'a str,
    pub title: &'a str,
    pub description: &'a str,
}

/// One task as a batch of event legs shows it: what the legs, applied in their order,
/// would do to it.
#[derive(Debug, Clone)]
pub struct SeenTask<'a> {
    pub id: Uuid,
    /// Used only if this is the task's first sighting.
    pub prices: Prices,
    /// The first text any leg carries.
    pub text: Option<TaskText<'a>>,
    /// The highest sequence among the legs, and the assignee of the first leg with it.
    pub sequence: i64,
    pub assignee: Uuid,
    /// The highest sequence of a completion that was newer than every leg before it
    /// (only such a completion can mark the task completed).
    pub completion: Option<i64>,
}

/// Records many tasks in one statement (locking their rows in id order): inserts the
/// unseen ones with their drawn prices, and fills the text of placeholders that this
/// sighting brings the text for. `tasks` must hold each id once. Returns the
/// placeholders it filled (their entries still lack the text: [`fill_entry_texts`]).
pub async fn see(
    conn: &mut PgConnection,
    tasks: &[SeenTask<'_>],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let n = tasks.len();
    let (mut ids, mut fees, mut rewards, mut known) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut public_ids, mut jira_ids, mut titles, mut descriptions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for task in tasks {
        ids.push(task.id);
        fees.push(task.prices.fee.get());
        rewards.push(task.prices.reward.get());
        known.push(task.text.is_some());
        let text = task.text.as_ref();
        public_ids.push(text.map_or("", |t| t.public_id));
        jira_ids.push(text.map_or("", |t| t.jira_id));
        titles.push(text.map_or("", |t| t.title));
        descriptions.push(text.map_or("", |t| t.description));
    }
    // The prices are set by the insert alone: the update only ever fills a placeholder's
    // text.
    let rows = sqlx::query!(
        r#"INSERT INTO tasks (id, fee_cents, reward_cents, text_known, public_id, jira_id, title,
                              description)
           SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::boolean[],
                                $5::text[], $6::text[], $7::text[], $8::text[])
           ORDER BY 1
           ON CONFLICT (id) DO UPDATE SET
               text_known = true, public_id = EXCLUDED.public_id, jira_id = EXCLUDED.jira_id,
               title = EXCLUDED.title, description = EXCLUDED.description
           WHERE NOT tasks.text_known AND EXCLUDED.text_known
           RETURNING id, xmax <> 0 AS "filled!""#,
        &ids,
        &fees,
        &rewards,
        &known,
        &public_ids as &[&str],
        &jira_ids as &[&str],
        &titles as &[&str],
        &descriptions as &[&str],
    )
    .fetch_all(conn)
    .await?;
    // Inserted rows have no xmax; updated ones (filled placeholders) have ours.
    Ok(rows
        .into_iter()
        .filter_map(|row| row.filled.then_some(row.id))
        .collect())
}

/// Gives the entries still without text of `tasks` their task's text, now known (after
/// [`see`] filled the task's placeholder).
pub async fn fill_entry_texts(
    conn: &mut PgConnection,
    tasks: &[(Uuid, TaskText<'_>)],
) -> Result<(), sqlx::Error> {
    if tasks.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = tasks.iter().map(|(id, _)| *id).collect();
    let jira_ids: Vec<&str> = tasks.iter().map(|(_, t)| t.jira_id).collect();
    let titles: Vec<&str> = tasks.iter().map(|(_, t)| t.title).collect();
    let descriptions: Vec<&str> = tasks.iter().map(|(_, t)| t.description).collect();
    sqlx::query!(
        "UPDATE entries e SET text_known = true, jira_id = t.jira_id, title = t.title,
                description = t.description
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
              AS t(id, jira_id, title, description)
         WHERE e.task_id = ANY($1) AND e.task_id = t.id AND NOT e.text_known",
        &ids,
        &jira_ids as &[&str],
        &titles as &[&str],
        &descriptions as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the newest assignment (and completion) of many tasks in one statement: a
/// task moves only to a higher sequence. Call after [`see`] (the rows are locked then).
pub async fn note_assignments(
    conn: &mut PgConnection,
    tasks: &[SeenTask<'_>],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    let sequences: Vec<i64> = tasks.iter().map(|t| t.sequence).collect();
    let assignees: Vec<Uuid> = tasks.iter().map(|t| t.assignee).collect();
    let completions: Vec<Option<i64>> = tasks.iter().map(|t| t.completion).collect();
    sqlx::query!(
        "UPDATE tasks t SET assignee_id = i.assignee, sequence = i.sequence,
                completed = t.completed OR COALESCE(i.completion > t.sequence, false)
         FROM UNNEST($1::uuid[], $2::bigint[], $3::uuid[], $4::bigint[])
              AS i(id, sequence, assignee, completion)
         WHERE t.id = i.id AND t.sequence < i.sequence",
        &ids,
        &sequences,
        &assignees,
        &completions as &[Option<i64>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The prices of the tasks among `ids` that Accounting has seen.
pub async fn prices(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Prices>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT id, fee_cents, reward_cents FROM tasks WHERE id = ANY($1)",
        ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let prices = Prices {
                fee: Cents(row.fee_cents),
                reward: Cents(row.reward_cents),
            };
            (row.id, prices)
        })
        .collect())
}
