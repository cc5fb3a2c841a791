//! `sink.write`/`sink.upsert` as BigQuery `tabledata.insertAll` requests over outbound HTTP, for the
//! components that implement `sink` on hosts which do not provide it (functions/sink-http,
//! functions/pipeline-adapter). [`request`] builds the requests and reads the answers (pure, tested
//! natively); [`Target`] is where they go, read from settings; `client` (wasm32 only) sends them with
//! `wasi:http/outgoing-handler`.

pub mod request;

#[cfg(target_arch = "wasm32")]
pub mod client;

/// How the adapter authenticates to the insertAll endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header: a Tributary host on a private network, or an emulator.
    None,
    /// A fixed bearer token (a secret: give it as a secret variable, never in a manifest).
    Bearer(String),
    /// An access token from the Google metadata server, fetched for each call (Cloud Run, GKE, GCE).
    Metadata,
}

/// Where rows go: the dataset's base URL, to which `/tables/<t>/insertAll` is appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://tributary-host:3000/bigquery/v2/projects/P/datasets/D` (a Tributary host, which
    /// group-commits and holds the credentials) or `https://bigquery.googleapis.com/bigquery/v2/...`.
    pub dataset_url: String,
    pub auth: Auth,
}

impl Target {
    /// From environment-style settings (functions/sink-http; `wasmtime serve --env`):
    /// `TRIBUTARY_INSERTALL_URL` (required, the dataset URL), `TRIBUTARY_BEARER_TOKEN`, or
    /// `TRIBUTARY_TOKEN_SOURCE=metadata`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let dataset_url = get("TRIBUTARY_INSERTALL_URL").ok_or("the sink adapter has no TRIBUTARY_INSERTALL_URL")?;
        let auth = match (get("TRIBUTARY_BEARER_TOKEN"), get("TRIBUTARY_TOKEN_SOURCE").as_deref()) {
            (Some(token), _) => Auth::Bearer(token),
            (None, Some("metadata")) => Auth::Metadata,
            (None, None | Some("" | "none")) => Auth::None,
            (None, Some(other)) => return Err(format!("TRIBUTARY_TOKEN_SOURCE: unknown source {other:?}")),
        };
        Ok(Self { dataset_url, auth })
    }

    /// From variables (functions/pipeline-adapter: Spin variables through `wasi:config/store`):
    /// `sink_origin` (`http://127.0.0.1:3001`, `https://bigquery.googleapis.com`), `sink_project`,
    /// `sink_dataset`, and `sink_token_source`: `none` (default), `metadata`, or `bearer` with the secret
    /// `sink_bearer_token`.
    pub fn from_variables(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let need = |name: &str| {
            get(name).filter(|v| !v.is_empty()).ok_or_else(|| format!("the sink adapter has no variable {name}"))
        };
        use tributary_model::adapter_settings as names;
        let origin = need(names::SINK_ORIGIN)?;
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(format!("sink_origin must be an http:// or https:// origin, not {origin:?}"));
        }
        let (project, dataset) = (need(names::SINK_PROJECT)?, need(names::SINK_DATASET)?);
        for (name, value) in [("sink_project", &project), ("sink_dataset", &dataset)] {
            if value.contains(['/', '?', '#']) {
                return Err(format!("{name} must be a plain name, not {value:?}"));
            }
        }
        let auth = match get(names::SINK_TOKEN_SOURCE).as_deref().unwrap_or("none") {
            "" | "none" => Auth::None,
            "metadata" => Auth::Metadata,
            "bearer" => Auth::Bearer(need(names::SINK_BEARER_TOKEN)?),
            other => return Err(format!("sink_token_source must be none, metadata or bearer, not {other:?}")),
        };
        let dataset_url = format!("{}/bigquery/v2/projects/{project}/datasets/{dataset}", origin.trim_end_matches('/'));
        Ok(Self { dataset_url, auth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn variables_name_the_dataset_and_the_token_source() {
        let target = Target::from_variables(settings(&[
            ("sink_origin", "http://127.0.0.1:3001/"),
            ("sink_project", "local"),
            ("sink_dataset", "tributary"),
        ]))
        .expect("target");
        assert_eq!(target.dataset_url, "http://127.0.0.1:3001/bigquery/v2/projects/local/datasets/tributary");
        assert_eq!(target.auth, Auth::None);
        let bearer = Target::from_variables(settings(&[
            ("sink_origin", "https://bigquery.googleapis.com"),
            ("sink_project", "p"),
            ("sink_dataset", "d"),
            ("sink_token_source", "bearer"),
            ("sink_bearer_token", "t0k"),
        ]))
        .expect("target");
        assert_eq!(bearer.auth, Auth::Bearer("t0k".into()));
    }

    #[test]
    fn bad_variables_say_which_one() {
        let base = [("sink_origin", "http://h:1"), ("sink_project", "p"), ("sink_dataset", "d")];
        let err = |extra: &[(&str, &str)]| {
            let all: Vec<_> = base.iter().chain(extra).copied().collect();
            Target::from_variables(settings(&all)).expect_err("refused")
        };
        assert!(err(&[("sink_token_source", "bearer")]).contains("sink_bearer_token"));
        assert!(err(&[("sink_token_source", "kerberos")]).contains("sink_token_source"));
        let no_dataset = Target::from_variables(settings(&base[..2])).expect_err("refused");
        assert!(no_dataset.contains("sink_dataset"), "{no_dataset}");
        let bad_origin = Target::from_variables(settings(&[("sink_origin", "h:1"), base[1], base[2]]));
        assert!(bad_origin.expect_err("refused").contains("sink_origin"));
        let bad_project = Target::from_variables(settings(&[base[0], ("sink_project", "p/x"), base[2]]));
        assert!(bad_project.expect_err("refused").contains("sink_project"));
    }

    #[test]
    fn environment_keeps_the_full_url() {
        let target = Target::from_env(settings(&[
            ("TRIBUTARY_INSERTALL_URL", "http://h:3000/bigquery/v2/projects/p/datasets/d"),
            ("TRIBUTARY_TOKEN_SOURCE", "metadata"),
        ]))
        .expect("target");
        assert_eq!(target.auth, Auth::Metadata);
        assert!(Target::from_env(settings(&[])).is_err());
    }
}
