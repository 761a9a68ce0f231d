//! `lab reset`: move a consumer group's committed offsets back (or forward) to reprocess, as
//! Kafka's `kafka-consumer-groups --reset-offsets` does: refused while the group has members,
//! and a plan only unless `--execute` is given.

use anyhow::bail;
use clap::Args;
use lab::dashboard::api::{GroupReset, ResetRequest};
use lab::dashboard::explorer::ResetTo;

use crate::control::LabApi;

#[derive(Debug, Args)]
pub(crate) struct ResetArgs {
    /// The consumer group, e.g. payment-service.
    group: String,
    /// Where to: `earliest`, `latest`, an offset (`42`), a time (`2026-12-06T10:00:00Z`, or
    /// `-5m` for five minutes ago; the first record at or after it).
    #[arg(long, value_parser = reset_to)]
    to: ResetTo,
    /// Only this topic (default: every topic the group has committed offsets on).
    #[arg(long)]
    topic: Option<String>,
    /// Move the offsets (without it, only print where they would go).
    #[arg(long)]
    execute: bool,
    #[command(flatten)]
    lab: LabApi,
}

/// `earliest`, `latest`, an offset, an RFC 3339 time, or `-<n>s|m|h` ago.
fn reset_to(s: &str) -> Result<ResetTo, String> {
    match s {
        "earliest" => return Ok(ResetTo::Earliest),
        "latest" => return Ok(ResetTo::Latest),
        _ => {}
    }
    if let Ok(offset) = s.parse::<i64>() {
        return match offset {
            0.. => Ok(ResetTo::Offset(offset)),
            _ => Err(format!(
                "{s}: an offset is not negative (a time ago is -5m)"
            )),
        };
    }
    if let Some(ago) = s.strip_prefix('-') {
        let (n, unit) = ago.split_at(ago.len().saturating_sub(1));
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(format!("{s}: a time ago ends in s, m or h, e.g. -5m")),
        };
        let n: i64 = n
            .parse()
            .map_err(|_| format!("{s}: not a number of {unit}"))?;
        let now = chrono::Utc::now().timestamp_millis();
        return Ok(ResetTo::Timestamp(now - n * seconds * 1000));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| ResetTo::Timestamp(t.timestamp_millis()))
        .map_err(|_| {
            format!("{s}: not earliest, latest, an offset, a time (2026-12-06T10:00:00Z) or -5m")
        })
}

pub(crate) async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let request = ResetRequest {
        to: args.to,
        topic: args.topic.clone(),
        dry_run: !args.execute,
    };
    let path = format!("/api/groups/{}/reset", args.group);
    let reset: GroupReset = args.lab.post(&path, Some(request)).await?;
    if reset.partitions.is_empty() {
        bail!("{} has no committed offsets to move", args.group);
    }
    for p in &reset.partitions {
        let now = p.committed.map_or("none".to_owned(), |c| c.to_string());
        println!("{}[{}]: {now} -> {}", p.topic, p.partition, p.offset);
    }
    let count = reset.partitions.len();
    if reset.dry_run {
        println!(
            "a plan for {count} partition(s) of {}: nothing moved (add --execute)",
            args.group
        );
    } else {
        println!("moved {}'s offsets on {count} partition(s)", args.group);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_to_is_a_position_an_offset_or_a_time() {
        assert!(matches!(reset_to("earliest"), Ok(ResetTo::Earliest)));
        assert!(matches!(reset_to("latest"), Ok(ResetTo::Latest)));
        assert!(matches!(reset_to("42"), Ok(ResetTo::Offset(42))));
        assert!(matches!(
            reset_to("2026-12-06T10:00:00.250Z"),
            Ok(ResetTo::Timestamp(1_796_551_200_250))
        ));
        let now = chrono::Utc::now().timestamp_millis();
        let Ok(ResetTo::Timestamp(ago)) = reset_to("-5m") else {
            panic!("five minutes ago");
        };
        assert!((now - 300_000 - ago).abs() < 5_000, "{ago} vs {now}");
        assert!(reset_to("-3").is_err());
        assert!(reset_to("-5d").is_err());
        assert!(reset_to("yesterday").is_err());
    }
}
