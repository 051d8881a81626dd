//! put, get, del, scan and cas: the kuberaft.kv.v1 API on the command line.

use std::io::Read;

use kuberaft_proto::kv::{self, Consistency, kv_client::KvClient};
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;

use super::Ctx;
use super::args::OutputFormat;
use super::client::{CallError, request};
use super::error::{self, CliError, Effect};
use super::members;
use super::output::{Table, out, outln, print_json};

/// Turns a failed call into one line; a missing leader is explained with how
/// many members could not be reached.
async fn explain(ctx: &Ctx, e: CallError, effect: Effect) -> CliError {
    if let CallError::Answered { endpoint, status } = &e
        && status.code() == Code::Unavailable
    {
        let views = members::survey(&ctx.client, true).await;
        let summary = members::unreachable_summary(&views);
        return error::unavailable(status.message(), endpoint, summary.as_deref());
    }
    e.into_cli(effect, ctx.client.command_timeout)
}

fn header_json(h: &Option<kv::ResponseHeader>) -> Value {
    match h {
        Some(h) => json!({
            "member_id": h.member_id,
            "term": h.term,
            "leader_id": h.leader_id,
            "applied_index": h.applied_index,
        }),
        None => Value::Null,
    }
}

fn consistency(serializable: bool) -> i32 {
    if serializable {
        Consistency::Serializable as i32
    } else {
        Consistency::Linearizable as i32
    }
}

pub async fn put(ctx: &Ctx, key: &str, value: &str) -> Result<(), CliError> {
    let key = ctx.enc.parse("key", key)?;
    let value = if value == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| {
            CliError::new(format!("cannot read the value from standard input: {e}"))
        })?;
        match ctx.enc {
            super::encoding::Encoding::Hex => ctx
                .enc
                .parse("value", String::from_utf8_lossy(&buf).trim())?,
            super::encoding::Encoding::Text => buf,
        }
    } else {
        ctx.enc.parse("value", value)?
    };
    let req = kv::PutRequest {
        key: key.clone(),
        value,
    };
    let r = ctx
        .client
        .call(Effect::Write, |ch, left| {
            let req = req.clone();
            async move {
                Ok(KvClient::new(ch)
                    .put(request(req, left))
                    .await?
                    .into_inner())
            }
        })
        .await;
    let (endpoint, r) = match r {
        Ok(ok) => ok,
        Err(e) => return Err(explain(ctx, e, Effect::Write).await),
    };
    match ctx.format {
        OutputFormat::Json => print_json(&json!({
            "key": ctx.enc.show(&key),
            "index": r.index,
            "endpoint": endpoint,
            "header": header_json(&r.header),
        })),
        OutputFormat::Table => outln!("OK (committed at index {})", r.index),
    }
    Ok(())
}

pub async fn get(ctx: &Ctx, key: &str, serializable: bool) -> Result<(), CliError> {
    let key = ctx.enc.parse("key", key)?;
    let req = kv::GetRequest {
        key: key.clone(),
        consistency: consistency(serializable),
    };
    let r = ctx
        .client
        .call(Effect::Read, |ch, left| {
            let req = req.clone();
            async move {
                Ok(KvClient::new(ch)
                    .get(request(req, left))
                    .await?
                    .into_inner())
            }
        })
        .await;
    let (endpoint, r) = match r {
        Ok(ok) => ok,
        Err(e) => return Err(explain(ctx, e, Effect::Read).await),
    };
    let shown_key = ctx.enc.show(&key);
    match (&r.kv, ctx.format) {
        (Some(kv), OutputFormat::Json) => print_json(&json!({
            "key": shown_key,
            "found": true,
            "value": ctx.enc.show(&kv.value),
            "mod_index": kv.mod_index,
            "endpoint": endpoint,
            "header": header_json(&r.header),
        })),
        (Some(kv), OutputFormat::Table) => outln!("{}", ctx.enc.show(&kv.value)),
        (None, OutputFormat::Json) => print_json(&json!({
            "key": shown_key,
            "found": false,
            "endpoint": endpoint,
            "header": header_json(&r.header),
        })),
        (None, OutputFormat::Table) => {}
    }
    match r.kv {
        Some(_) => Ok(()),
        None => Err(CliError::no(format!("key {shown_key:?} not found"))),
    }
}

pub async fn del(ctx: &Ctx, key: &str) -> Result<(), CliError> {
    let key = ctx.enc.parse("key", key)?;
    let req = kv::DeleteRequest { key: key.clone() };
    let r = ctx
        .client
        .call(Effect::Write, |ch, left| {
            let req = req.clone();
            async move {
                Ok(KvClient::new(ch)
                    .delete(request(req, left))
                    .await?
                    .into_inner())
            }
        })
        .await;
    let (endpoint, r) = match r {
        Ok(ok) => ok,
        Err(e) => return Err(explain(ctx, e, Effect::Write).await),
    };
    match ctx.format {
        OutputFormat::Json => print_json(&json!({
            "key": ctx.enc.show(&key),
            "deleted": r.deleted,
            "index": r.index,
            "endpoint": endpoint,
            "header": header_json(&r.header),
        })),
        OutputFormat::Table if r.deleted => {
            outln!("deleted (committed at index {})", r.index)
        }
        OutputFormat::Table => outln!(
            "not found, nothing to delete (committed at index {})",
            r.index
        ),
    }
    Ok(())
}

pub struct ScanOptions<'a> {
    pub prefix: &'a str,
    pub limit: u32,
    pub start_after: Option<&'a str>,
    pub serializable: bool,
    pub count_only: bool,
}

async fn scan_page(ctx: &Ctx, req: kv::ScanRequest) -> Result<kv::ScanResponse, CliError> {
    let r = ctx
        .client
        .call(Effect::Read, |ch, left| {
            let req = req.clone();
            async move {
                Ok(KvClient::new(ch)
                    .scan(request(req, left))
                    .await?
                    .into_inner())
            }
        })
        .await;
    match r {
        Ok((_, r)) => Ok(r),
        Err(e) => Err(explain(ctx, e, Effect::Read).await),
    }
}

pub async fn scan(ctx: &Ctx, o: ScanOptions<'_>) -> Result<(), CliError> {
    if !(1..=10_000).contains(&o.limit) {
        return Err(CliError::usage(format!(
            "--limit {} is out of range; give 1 to 10000",
            o.limit
        )));
    }
    let prefix = ctx.enc.parse("prefix", o.prefix)?;
    let start_after = match o.start_after {
        Some(s) => ctx.enc.parse("--start-after", s)?,
        None => Vec::new(),
    };
    let mut req = kv::ScanRequest {
        prefix,
        limit: if o.count_only { 10_000 } else { o.limit },
        start_after,
        consistency: consistency(o.serializable),
    };
    if o.count_only {
        let mut count: u64 = 0;
        loop {
            let r = scan_page(ctx, req.clone()).await?;
            count += r.kvs.len() as u64;
            match r.kvs.last() {
                Some(last) if r.more => req.start_after = last.key.clone(),
                _ => break,
            }
        }
        match ctx.format {
            OutputFormat::Json => print_json(&json!({ "count": count })),
            OutputFormat::Table => outln!("{count}"),
        }
        return Ok(());
    }
    let r = scan_page(ctx, req).await?;
    match ctx.format {
        OutputFormat::Json => print_json(&json!({
            "kvs": r.kvs.iter().map(|kv| json!({
                "key": ctx.enc.show(&kv.key),
                "value": ctx.enc.show(&kv.value),
                "mod_index": kv.mod_index,
            })).collect::<Vec<_>>(),
            "more": r.more,
            "header": header_json(&r.header),
        })),
        OutputFormat::Table => {
            let mut t = Table::new(["KEY", "VALUE", "MOD INDEX"]);
            for kv in &r.kvs {
                t.row([
                    ctx.enc.show(&kv.key),
                    ctx.enc.show(&kv.value),
                    kv.mod_index.to_string(),
                ]);
            }
            if t.is_empty() {
                eprintln!("no keys");
            } else {
                out!("{}", t.render());
            }
            if let (true, Some(last)) = (r.more, r.kvs.last()) {
                eprintln!(
                    "(more keys follow; continue with --start-after {:?})",
                    ctx.enc.show(&last.key)
                );
            }
        }
    }
    Ok(())
}

/// The sentence for a failed compare: what the key holds and what was expected.
pub fn compare_failed(key: &str, expected: Option<&str>, current: Option<&str>) -> String {
    let now = match current {
        Some(v) => format!("holds {v:?}"),
        None => "does not exist".to_string(),
    };
    let wanted = match expected {
        Some(v) => format!("expected {v:?}"),
        None => "expected it to be absent".to_string(),
    };
    format!("compare failed: key {key:?} {now} ({wanted}); nothing changed")
}

pub async fn cas(
    ctx: &Ctx,
    key: &str,
    new_value: &str,
    expect: Option<&str>,
) -> Result<(), CliError> {
    let key_bytes = ctx.enc.parse("key", key)?;
    let expected_value = match expect {
        Some(e) => Some(ctx.enc.parse("--expect", e)?),
        None => None,
    };
    let req = kv::CompareAndSwapRequest {
        key: key_bytes.clone(),
        expected_value,
        new_value: ctx.enc.parse("new value", new_value)?,
    };
    let r = ctx
        .client
        .call(Effect::Write, |ch, left| {
            let req = req.clone();
            async move {
                Ok(KvClient::new(ch)
                    .compare_and_swap(request(req, left))
                    .await?
                    .into_inner())
            }
        })
        .await;
    let (endpoint, r) = match r {
        Ok(ok) => ok,
        // A failed compare is an answer: its details hold the current value.
        Err(CallError::Answered { endpoint, status })
            if status.code() == Code::FailedPrecondition =>
        {
            match kv::CompareAndSwapResponse::decode(status.details()) {
                Ok(r) if !status.details().is_empty() => (endpoint, r),
                _ => {
                    return Err(CliError::no(format!(
                        "compare failed: {} (answered by {endpoint}); nothing changed",
                        status.message()
                    )));
                }
            }
        }
        Err(e) => return Err(explain(ctx, e, Effect::Write).await),
    };
    let shown_key = ctx.enc.show(&key_bytes);
    let current = r.current_value.as_deref().map(|v| ctx.enc.show(v));
    if let OutputFormat::Json = ctx.format {
        print_json(&json!({
            "key": shown_key,
            "succeeded": r.succeeded,
            "index": r.index,
            "current_value": current,
            "endpoint": endpoint,
            "header": header_json(&r.header),
        }));
    } else if r.succeeded {
        outln!("OK (committed at index {})", r.index);
    }
    if r.succeeded {
        Ok(())
    } else {
        let expected = expect.map(|e| {
            ctx.enc
                .show(&ctx.enc.parse("--expect", e).unwrap_or_default())
        });
        Err(CliError::no(compare_failed(
            &shown_key,
            expected.as_deref(),
            current.as_deref(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_compare_says_what_the_key_holds() {
        assert_eq!(
            compare_failed("k", Some("a"), Some("b")),
            "compare failed: key \"k\" holds \"b\" (expected \"a\"); nothing changed"
        );
        assert_eq!(
            compare_failed("k", Some("a"), None),
            "compare failed: key \"k\" does not exist (expected \"a\"); nothing changed"
        );
        assert_eq!(
            compare_failed("k", None, Some("b")),
            "compare failed: key \"k\" holds \"b\" (expected it to be absent); nothing changed"
        );
    }
}
