//! The calls of auto-labelling and reviews: a repository's labels, labelling an
//! issue, the pull requests at a commit, a commit's check suites, posting a
//! review. Same client, retries and errors as [`crate::api`]; no decisions.

use crate::api::{ApiError, GitHubClient};
use crate::repo::RepoName;
use crate::triage::Suite;
use hyper::Method;
use serde_json::{json, Value};

/// Pages read of a paginated list at most (100 items each).
const MAX_PAGES: u32 = 10;

impl GitHubClient {
    /// The names of a repository's labels (up to 1000).
    pub async fn list_labels(&self, repo: &RepoName) -> Result<Vec<String>, ApiError> {
        let mut names = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!("/repos/{repo}/labels?per_page=100&page={page}");
            let items = self.get_array(&path).await?;
            let count = items.len();
            names.extend(
                items
                    .iter()
                    .filter_map(|l| l.get("name").and_then(Value::as_str))
                    .map(str::to_string),
            );
            if count < 100 {
                break;
            }
        }
        Ok(names)
    }

    /// Add `labels` to issue or pull request `number` (labels it has stay).
    pub async fn add_labels(
        &self,
        repo: &RepoName,
        number: u64,
        labels: &[String],
    ) -> Result<(), ApiError> {
        let path = format!("/repos/{repo}/issues/{number}/labels");
        self.send(Method::POST, &path, Some(json!({ "labels": labels })))
            .await
            .map(drop)
    }

    /// Remove `label` from issue or pull request `number`; not having it is fine.
    pub async fn remove_label(
        &self,
        repo: &RepoName,
        number: u64,
        label: &str,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/repos/{repo}/issues/{number}/labels/{}",
            escape_path_segment(label)
        );
        match self.send(Method::DELETE, &path, None).await {
            Err(e) if e.status() == Some(404) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The open pull requests of `repo` whose head is commit `sha`, forks
    /// included (the open pulls listed and matched by `head.sha`: GitHub's
    /// check-suite payloads list none for a fork's pull request).
    pub async fn open_pulls_at(&self, repo: &RepoName, sha: &str) -> Result<Vec<u64>, ApiError> {
        let mut numbers = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!("/repos/{repo}/pulls?state=open&per_page=100&page={page}");
            let items = self.get_array(&path).await?;
            for pull in &items {
                let head = pull.pointer("/head/sha").and_then(Value::as_str);
                if head.is_some_and(|h| h.eq_ignore_ascii_case(sha)) {
                    if let Some(n) = pull.get("number").and_then(Value::as_u64) {
                        numbers.push(n);
                    }
                }
            }
            if items.len() < 100 {
                break;
            }
        }
        Ok(numbers)
    }

    /// Every check suite of commit `sha` (up to 1000).
    pub async fn check_suites(&self, repo: &RepoName, sha: &str) -> Result<Vec<Suite>, ApiError> {
        let mut suites = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!("/repos/{repo}/commits/{sha}/check-suites?per_page=100&page={page}");
            let answer = self.get_json(&path).await?;
            let items = answer
                .get("check_suites")
                .and_then(Value::as_array)
                .ok_or_else(|| ApiError::BadResponse {
                    request: format!("GET {path}"),
                    what: "a check_suites array",
                })?;
            for s in items {
                suites.push(Suite {
                    status: s
                        .get("status")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string(),
                    conclusion: s
                        .get("conclusion")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    runs: s.get("latest_check_runs_count").and_then(Value::as_u64),
                });
            }
            if items.len() < 100 {
                break;
            }
        }
        Ok(suites)
    }

    /// Post `body` as a review (event `COMMENT`) of pull request `number` at commit `sha`.
    pub async fn post_review(
        &self,
        repo: &RepoName,
        number: u64,
        sha: &str,
        body: &str,
    ) -> Result<(), ApiError> {
        let path = format!("/repos/{repo}/pulls/{number}/reviews");
        let review = json!({ "commit_id": sha, "body": body, "event": "COMMENT" });
        self.send(Method::POST, &path, Some(review)).await.map(drop)
    }

    async fn get_json(&self, path: &str) -> Result<Value, ApiError> {
        let answer = self.send(Method::GET, path, None).await?;
        serde_json::from_slice(&answer).map_err(|_| ApiError::BadResponse {
            request: format!("GET {path}"),
            what: "a JSON body",
        })
    }

    async fn get_array(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        match self.get_json(path).await? {
            Value::Array(items) => Ok(items),
            _ => Err(ApiError::BadResponse {
                request: format!("GET {path}"),
                what: "a JSON array",
            }),
        }
    }
}

/// A label name as one URL path segment (labels may hold spaces, `/`, `%`...).
fn escape_path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_escaped_for_the_path() {
        assert_eq!(escape_path_segment("bug"), "bug");
        assert_eq!(
            escape_path_segment("good first issue"),
            "good%20first%20issue"
        );
        assert_eq!(escape_path_segment("a/../b"), "a%2F..%2Fb");
        assert_eq!(escape_path_segment("é"), "%C3%A9");
    }
}
