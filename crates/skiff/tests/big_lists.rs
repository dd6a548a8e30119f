//! Lists longer than the server's internal read page (500 stored objects): the server
//! reads them page by page at one revision and streams the response, and a user must not
//! be able to tell. Full lists, label selectors that match a few items on every internal
//! page, limit/continue walks, lists at an older resourceVersion, Tables and
//! protobuf-first Accept headers all give what one read of the whole collection gives.

mod common;

use std::collections::BTreeMap;

use serde_json::Value;

/// More than two internal pages.
const COUNT: usize = 1234;
const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm_name(i: usize) -> String {
    format!("cm-{i:04}")
}

/// Every seventh ConfigMap is labelled pick=yes, so each internal page holds some.
fn picked(i: usize) -> bool {
    i % 7 == 3
}

fn create_many(s: &testkit::TestServer) {
    let items: Vec<Value> = (0..COUNT)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": cm_name(i),
                    "labels": {"pick": if picked(i) { "yes" } else { "no" }},
                },
                "data": {"i": i.to_string(), "text": "x\"y\\z \u{e9}"},
            })
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    s.kubectl_stdin_ok(&["create", "-f", "-"], &list.to_string());
}

fn raw_list(s: &testkit::TestServer, query: &str) -> Value {
    let out = s.kubectl_ok(&["get", "--raw", &format!("{CMS}?{query}")]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("list {query}: {e}: {out:.300}"))
}

/// The test's ConfigMaps in a list, by name (the server adds kube-root-ca.crt).
fn ours(list: &Value) -> BTreeMap<String, Value> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {list:.300}"))
        .iter()
        .filter_map(|item| {
            let name = item["metadata"]["name"].as_str()?;
            name.starts_with("cm-")
                .then(|| (name.to_string(), item.clone()))
        })
        .collect()
}

/// Follow continue tokens from `query` (which sets a limit) to the end.
fn walk(s: &testkit::TestServer, query: &str) -> (Vec<Value>, Vec<Value>) {
    walk_from(s, query, query.to_string())
}

/// Like `walk`, starting with the request `first`.
fn walk_from(s: &testkit::TestServer, query: &str, first: String) -> (Vec<Value>, Vec<Value>) {
    let mut pages = Vec::new();
    let mut items = Vec::new();
    let mut next = first;
    loop {
        let page = raw_list(s, &next);
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        let token = page["metadata"]["continue"].as_str().map(String::from);
        pages.push(page);
        match token {
            Some(t) if !t.is_empty() => next = format!("{query}&continue={t}"),
            _ => return (pages, items),
        }
    }
}

#[test]
fn lists_spanning_internal_pages_are_whole_and_consistent() {
    let s = testkit::server!();
    create_many(&s);

    let full = raw_list(&s, "");
    assert_eq!(full["kind"], "ConfigMapList");
    let full_rv = full["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        full["metadata"].get("continue").is_none(),
        "{}",
        full["metadata"]
    );
    let all = ours(&full);
    // The server's own ConfigMaps (kube-root-ca.crt) are listed too.
    let extra = full["items"].as_array().unwrap().len() - all.len();
    let want: Vec<String> = (0..COUNT).map(cm_name).collect();
    assert_eq!(all.keys().cloned().collect::<Vec<_>>(), want);
    for (name, item) in &all {
        // Typed list items carry no type meta, but their own resourceVersion.
        assert!(
            item.get("kind").is_none() && item.get("apiVersion").is_none(),
            "{item}"
        );
        let rv = item["metadata"]["resourceVersion"].as_str().unwrap_or("");
        assert!(rv.parse::<u64>().is_ok(), "{name}: {item}");
        assert_eq!(item["data"]["text"], "x\"y\\z \u{e9}");
    }
    // An item is what a get returns, minus apiVersion and kind.
    // (--raw: `kubectl get -o json` would hide managedFields.)
    let raw = s.kubectl_ok(&["get", "--raw", &format!("{CMS}/cm-0777")]);
    let mut got: Value = serde_json::from_str(&raw).unwrap();
    got.as_object_mut().unwrap().remove("apiVersion");
    got.as_object_mut().unwrap().remove("kind");
    assert_eq!(all["cm-0777"], got);

    // A label selector matching a few items on every internal page.
    let sel = ours(&raw_list(&s, "labelSelector=pick%3Dyes"));
    let picked_names: Vec<String> = (0..COUNT).filter(|i| picked(*i)).map(cm_name).collect();
    assert_eq!(sel.keys().cloned().collect::<Vec<_>>(), picked_names);
    for (name, item) in &sel {
        assert_eq!(item, &all[name]);
    }

    // limit/continue gives the same items as the full list, at one revision.
    let (pages, items) = walk(&s, "limit=100");
    assert_eq!(pages.len(), (COUNT + extra).div_ceil(100));
    let total = pages[0]["metadata"]["remainingItemCount"].as_u64().unwrap() + 100;
    assert_eq!(total as usize, COUNT + extra, "{}", pages[0]["metadata"]);
    for p in &pages {
        assert_eq!(p["metadata"]["resourceVersion"], full_rv.as_str());
    }
    let walked = ours(&serde_json::json!({ "items": items }));
    assert_eq!(walked, all);

    // limit/continue with a selector: pages of matches across internal pages.
    let (pages, items) = walk(&s, "labelSelector=pick%3Dyes&limit=40");
    assert!(pages.len() >= 5, "{} pages", pages.len());
    assert_eq!(ours(&serde_json::json!({ "items": items })), sel);

    // Change things in the middle of a walk: the rest still comes from the first
    // page's snapshot.
    let first = raw_list(&s, "limit=300");
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    s.kubectl_ok(&["delete", "cm", "cm-1000", "cm-0400"]);
    s.kubectl_ok(&["create", "cm", "cm-9999"]);
    s.kubectl_ok(&["label", "cm", "cm-1100", "pick=changed", "--overwrite"]);
    let (_, rest) = walk_from(&s, "limit=300", format!("limit=300&continue={token}"));
    let mut items = first["items"].as_array().cloned().unwrap();
    items.extend(rest);
    assert_eq!(ours(&serde_json::json!({ "items": items })), all);

    // A full list at the old revision: read from history, page after page.
    let old = raw_list(
        &s,
        &format!("resourceVersion={full_rv}&resourceVersionMatch=Exact"),
    );
    assert_eq!(old["metadata"]["resourceVersion"], full_rv.as_str());
    assert_eq!(ours(&old), all);
    let old_sel = raw_list(
        &s,
        &format!("resourceVersion={full_rv}&resourceVersionMatch=Exact&labelSelector=pick%3Dyes"),
    );
    assert_eq!(ours(&old_sel), sel);

    // And the newest state shows the changes.
    let now = ours(&raw_list(&s, ""));
    assert_eq!(now.len(), COUNT - 1);
    assert!(now.contains_key("cm-9999") && !now.contains_key("cm-1000"));
    assert_eq!(now["cm-1100"]["metadata"]["labels"]["pick"], "changed");
}

#[test]
fn big_tables_and_negotiation() {
    let s = testkit::server!();
    create_many(&s);
    let want: Vec<String> = (0..COUNT).map(cm_name).collect();

    // kubectl's tables: pages of 500, and one request without a limit.
    for chunk in ["--chunk-size=500", "--chunk-size=0"] {
        let out = s.kubectl_ok(&["get", "cm", chunk]);
        let names: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("cm-"))
            .collect();
        assert_eq!(names, want, "{chunk}");
        assert!(out.starts_with("NAME"), "{out:.200}");
        let row = out.lines().find(|l| l.starts_with("cm-0042")).unwrap();
        assert_eq!(row.split_whitespace().nth(1), Some("2"), "{row}");
    }
    let out = s.kubectl_ok(&[
        "get",
        "cm",
        "-l",
        "pick=yes",
        "-o",
        "name",
        "--chunk-size=0",
    ]);
    let want_picked: Vec<String> = (0..COUNT)
        .filter(|i| picked(*i))
        .map(|i| format!("configmap/{}", cm_name(i)))
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want_picked);

    // The Table itself, as kubectl receives it in one request.
    let mut cmd = s.curl_cmd("GET", CMS);
    cmd.args(["-H", "Accept: application/json;as=Table;v=v1;g=meta.k8s.io"]);
    let (code, body) = testkit::split_status(&cmd.output().unwrap());
    assert_eq!(code, 200, "{body:.300}");
    let table: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(table["kind"], "Table");
    assert!(table["metadata"]["resourceVersion"].as_str().is_some());
    let rows = table["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["cells"][0].as_str())
        .filter(|n| n.starts_with("cm-"))
        .collect();
    assert_eq!(names, want);
    let row = rows
        .iter()
        .find(|r| r["cells"][0] == "cm-0005")
        .unwrap_or_else(|| panic!("no row for cm-0005"));
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["labels"]["pick"], "no");

    // Metadata-only clients.
    let mut cmd = s.curl_cmd("GET", &format!("{CMS}?labelSelector=pick%3Dyes"));
    cmd.args([
        "-H",
        "Accept: application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
    ]);
    let (code, body) = testkit::split_status(&cmd.output().unwrap());
    assert_eq!(code, 200, "{body:.300}");
    let partial: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(partial["kind"], "PartialObjectMetadataList");
    let items = partial["items"].as_array().unwrap();
    assert_eq!(items.len(), want_picked.len());
    assert!(items.iter().all(|i| i["kind"] == "PartialObjectMetadata"
        && i.get("data").is_none()
        && i["metadata"]["resourceVersion"].is_string()));

    // Protobuf-first clients get the JSON list.
    let mut cmd = s.curl_cmd("GET", CMS);
    cmd.args([
        "-H",
        "Accept: application/vnd.kubernetes.protobuf, application/json",
    ]);
    let (code, body) = testkit::split_status(&cmd.output().unwrap());
    assert_eq!(code, 200, "{body:.300}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ours(&list).len(), COUNT);

    // YAML lists are still whole.
    let mut cmd = s.curl_cmd("GET", &format!("{CMS}?labelSelector=pick%3Dyes"));
    cmd.args(["-H", "Accept: application/yaml"]);
    let (code, body) = testkit::split_status(&cmd.output().unwrap());
    assert_eq!(code, 200, "{body:.300}");
    assert_eq!(body.matches("name: cm-").count(), want_picked.len());
}
