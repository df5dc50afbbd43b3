//! `warmpool jobs`: the server's jobs, newest first, as a table or JSON. Also the
//! plain-text table that `status` shares. Read-only.

use super::client::{query, Client, ServerArgs};
use anyhow::Context;
use warmpool_server::api::JobView;

#[derive(clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Only jobs in this state (queued, running, succeeded, failed, timed_out,
    /// cancelled, interrupted).
    #[arg(long)]
    state: Option<String>,
    /// Only jobs of this profile.
    #[arg(long, short = 'p')]
    profile: Option<String>,
    /// At most this many: 1 to 1000 (what the server takes).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: JobsArgs) -> anyhow::Result<u8> {
    let client = Client::from_args(&args.server)?;
    let path = format!(
        "/v1/jobs{}",
        query(&[
            ("state", args.state),
            ("profile", args.profile),
            ("limit", Some(args.limit.to_string())),
        ])
    );
    if args.json {
        // As the server sent it: every field, including ones this client does not know.
        let jobs: serde_json::Value = client.get_json(&path).await.context("listing jobs")?;
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(0);
    }
    let jobs: Vec<JobView> = client.get_json(&path).await.context("listing jobs")?;
    print!("{}", jobs_table(&jobs));
    Ok(0)
}

fn jobs_table(jobs: &[JobView]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.profile.clone(),
                j.state.clone(),
                exit_cell(j),
                match j.warm {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }
                .to_string(),
                time_cell(&j.created_at),
            ]
        })
        .collect();
    table(
        &[
            ("ID", Align::Left),
            ("PROFILE", Align::Left),
            ("STATE", Align::Left),
            ("EXIT", Align::Right),
            ("WARM", Align::Left),
            ("CREATED (UTC)", Align::Left),
        ],
        &rows,
    )
}

/// The exit code, `SIGN` for death by signal N, or `-` while there is neither.
fn exit_cell(j: &JobView) -> String {
    match (j.exit_code, j.signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("SIG{s}"),
        (None, None) => "-".to_string(),
    }
}

/// `2026-11-28T10:00:00.123Z` as `2026-11-28 10:00:00`; anything else as it is.
fn time_cell(rfc3339: &str) -> String {
    match rfc3339.split_once('T') {
        Some((date, time)) if date.len() == 10 && time.len() >= 8 => {
            format!("{date} {}", &time[..8])
        }
        _ => rfc3339.to_string(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart, one row per line.
pub fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = columns.iter().map(|(h, _)| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, ((_, align), cell)) in columns.iter().zip(row).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            match align {
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
                Align::Right => {
                    line.push_str(&pad);
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_their_widest_cell() {
        let t = table(
            &[
                ("NAME", Align::Left),
                ("N", Align::Right),
                ("X", Align::Left),
            ],
            &[
                vec!["a".into(), "1".into(), "".into()],
                vec!["longer".into(), "100".into(), "z".into()],
            ],
        );
        assert_eq!(t, "NAME      N  X\na         1\nlonger  100  z\n");
    }

    #[test]
    fn a_job_row_says_how_it_ended() {
        let mut j = JobView {
            id: "j-1".into(),
            profile: "bb".into(),
            state: "failed".into(),
            exit_code: Some(7),
            signal: None,
            warm: Some(false),
            node: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_cut: false,
            stderr_cut: false,
            output_url: "/v1/jobs/j-1/output".into(),
            truncated: false,
            error: None,
            created_at: "2026-11-28T10:00:00.123Z".into(),
            started_at: None,
            finished_at: None,
        };
        let t = jobs_table(std::slice::from_ref(&j));
        let row = t.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["j-1", "bb", "failed", "7", "no", "2026-11-28", "10:00:00"]
        );
        j.exit_code = None;
        j.signal = Some(9);
        assert_eq!(exit_cell(&j), "SIG9");
        j.signal = None;
        assert_eq!(exit_cell(&j), "-");
        assert_eq!(time_cell("yesterday"), "yesterday");
    }
}
