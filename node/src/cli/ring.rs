//! `ringkv ring simulate` and `ringkv ring sweep`: placement what-ifs on a
//! made-up cluster, exact from arc lengths and checked by sampling. No
//! network; everything is computed here.

use std::fmt::Write as _;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use ringkv_ring::analysis::{self, Balance, MoveCost, NodeShare, SampledMoves};
use ringkv_ring::{NodeId, NodeSpec, Ring, DEFAULT_VNODES};
use serde::Serialize;

use super::table::{bar, pct, Align, Table};

/// Most nodes a simulation may have (the ring's token limit also applies).
const NODES_MAX: usize = 100_000;
/// Most keys a simulation may sample.
const KEYS_MAX: u64 = 100_000_000;
/// Width of the share bars, in terminal cells.
const BAR_WIDTH: usize = 30;

/// Arguments of `ringkv ring simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Nodes in the starting cluster, named node-1 .. node-N.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=NODES_MAX as u64))]
    nodes: u64,
    /// Tokens per unit of weight.
    #[arg(long, default_value_t = DEFAULT_VNODES, value_parser = clap::value_parser!(u32).range(1..))]
    vnodes: u32,
    /// Node weights, comma separated; a shorter list repeats (`2,1` gives
    /// node-1 weight 2, node-2 weight 1, node-3 weight 2, ...).
    #[arg(long, value_delimiter = ',')]
    weights: Vec<u32>,
    /// Node zones, comma separated; a shorter list repeats, so `--zones
    /// a,b,c` spreads the nodes over three zones.
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// Add this many nodes (weight 1, zones continuing the pattern).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=NODES_MAX as u64))]
    add: u64,
    /// Remove these nodes by name (repeat the flag or separate by commas).
    #[arg(long, value_delimiter = ',')]
    remove: Vec<String>,
    /// Replication factor for replica shares and range moves.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    rf: u64,
    /// Keys to sample as a cross-check of the exact figures (0: none).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(0..=KEYS_MAX))]
    keys: u64,
    /// Share of all traffic carried by one hot key, from 0 to 1.
    #[arg(long, default_value_t = 0.1, value_parser = parse_share)]
    hot_key_share: f64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ringkv ring sweep`.
#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    /// Nodes in the cluster, named node-1 .. node-N.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=NODES_MAX as u64))]
    nodes: u64,
    /// Vnode counts to compare, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,150,300")]
    vnodes: Vec<u32>,
    /// Node weights, comma separated, repeating as in `simulate`.
    #[arg(long, value_delimiter = ',')]
    weights: Vec<u32>,
    /// Node zones, comma separated, repeating as in `simulate`.
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

/// A simulated node: its name and its placement spec.
#[derive(Clone, Debug)]
struct SimNode {
    name: String,
    spec: NodeSpec,
}

/// Builds node-`first` .. node-`last` with weights and zones repeating.
fn sim_nodes(first: u64, last: u64, weights: &[u32], zones: &[String]) -> Result<Vec<SimNode>> {
    (first..=last)
        .map(|i| {
            let name = format!("node-{i}");
            let slot = (i - 1) as usize;
            let weight = if weights.is_empty() {
                1
            } else {
                weights[slot % weights.len()]
            };
            if weight == 0 {
                bail!("weight 0 for {name}: weights start at 1 (remove the node instead)");
            }
            let mut spec = NodeSpec::new(NodeId::from_name(&name)).with_weight(weight);
            if !zones.is_empty() {
                spec.zone = Some(zones[slot % zones.len()].clone());
            }
            Ok(SimNode { name, spec })
        })
        .collect()
}

fn build(nodes: &[SimNode], vnodes: u32) -> Result<Ring> {
    let view: Vec<NodeSpec> = nodes.iter().map(|n| n.spec.clone()).collect();
    Ring::build(&view, vnodes).context("cannot build the ring")
}

fn name_of(nodes: &[SimNode], id: &NodeId) -> String {
    nodes
        .iter()
        .find(|n| n.spec.id == *id)
        .map_or_else(|| id.short(), |n| n.name.clone())
}

fn sample_keys(count: u64) -> impl Iterator<Item = Vec<u8>> {
    (0..count).map(|i| format!("key:{i}").into_bytes())
}

#[derive(Debug, Serialize)]
struct NodeRow {
    name: String,
    #[serde(flatten)]
    share: NodeShare,
    load: f64,
    sampled_share: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RingReport {
    nodes: usize,
    tokens: usize,
    digest: String,
    rows: Vec<NodeRow>,
    balance: Balance,
}

#[derive(Debug, Serialize)]
struct ChangeReport {
    added: Vec<String>,
    removed: Vec<String>,
    after: RingReport,
    cost: MoveCost,
    sampled: Option<SampledMoves>,
}

#[derive(Debug, Serialize)]
struct HotKeyReport {
    share: f64,
    node: String,
    node_traffic: f64,
    node_traffic_over_avg: f64,
    spread_over_replicas: usize,
    spread_traffic: f64,
    spread_traffic_over_avg: f64,
}

#[derive(Debug, Serialize)]
struct SimulateReport {
    vnodes: u32,
    rf: usize,
    keys_sampled: u64,
    before: RingReport,
    change: Option<ChangeReport>,
    hot_key: HotKeyReport,
}

fn ring_report(ring: &Ring, nodes: &[SimNode], rf: usize, keys: u64) -> RingReport {
    let shares = analysis::shares(ring, rf);
    let sampled = (keys > 0).then(|| analysis::sample_owners(ring, sample_keys(keys)));
    let balance = analysis::balance(&shares);
    let mut rows: Vec<NodeRow> = shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| NodeRow {
            name: name_of(nodes, &share.id),
            load: share.load(),
            sampled_share: sampled.as_ref().map(|c| c[i] as f64 / keys as f64),
            share,
        })
        .collect();
    rows.sort_by_key(|r| sort_key(&r.name));
    RingReport {
        nodes: ring.nodes().len(),
        tokens: ring.token_count(),
        digest: ring.digest().to_string(),
        rows,
        balance,
    }
}

/// Sorts node-2 before node-10.
fn sort_key(name: &str) -> (usize, String) {
    (name.len(), name.to_owned())
}

/// Worst case for one hot key: it lands on the node that already has the
/// largest share.
fn hot_key_report(report: &RingReport, share: f64, rf: usize) -> HotKeyReport {
    let hottest = report
        .rows
        .iter()
        .max_by(|a, b| a.share.share.total_cmp(&b.share.share))
        .expect("a ring has nodes");
    let avg = 1.0 / report.nodes as f64;
    let base = (1.0 - share) * hottest.share.share;
    let spread = rf.min(report.nodes);
    HotKeyReport {
        share,
        node: hottest.name.clone(),
        node_traffic: share + base,
        node_traffic_over_avg: (share + base) / avg,
        spread_over_replicas: spread,
        spread_traffic: share / spread as f64 + base,
        spread_traffic_over_avg: (share / spread as f64 + base) / avg,
    }
}

/// Runs `ringkv ring simulate`.
pub(crate) fn simulate(args: &SimulateArgs) -> Result<String> {
    let rf = args.rf as usize;
    let before_nodes = sim_nodes(1, args.nodes, &args.weights, &args.zones)?;
    let before = build(&before_nodes, args.vnodes)?;
    let before_report = ring_report(&before, &before_nodes, rf, args.keys);

    let change = if args.add > 0 || !args.remove.is_empty() {
        Some(change_report(args, &before, &before_nodes, rf)?)
    } else {
        None
    };
    let hot_key = hot_key_report(&before_report, args.hot_key_share, rf);
    let report = SimulateReport {
        vnodes: args.vnodes,
        rf,
        keys_sampled: args.keys,
        before: before_report,
        change,
        hot_key,
    };
    if args.json {
        return Ok(serde_json::to_string_pretty(&report).expect("reports serialize") + "\n");
    }
    Ok(render_simulate(&report))
}

fn change_report(
    args: &SimulateArgs,
    before: &Ring,
    nodes: &[SimNode],
    rf: usize,
) -> Result<ChangeReport> {
    for name in &args.remove {
        if !nodes.iter().any(|n| &n.name == name) {
            bail!(
                "--remove {name}: no such node (nodes are node-1 .. node-{})",
                args.nodes
            );
        }
    }
    let mut after_nodes: Vec<SimNode> = nodes
        .iter()
        .filter(|n| !args.remove.contains(&n.name))
        .cloned()
        .collect();
    if args.nodes + args.add > NODES_MAX as u64 {
        bail!(
            "--nodes plus --add is {}, more than {NODES_MAX}",
            args.nodes + args.add
        );
    }
    let added = sim_nodes(args.nodes + 1, args.nodes + args.add, &[], &args.zones)?;
    after_nodes.extend(added.iter().cloned());
    if after_nodes.is_empty() {
        bail!("removing every node leaves no ring to compare");
    }
    let after = build(&after_nodes, args.vnodes)?;
    let all: Vec<SimNode> = nodes.iter().chain(added.iter()).cloned().collect();
    // hash % N indexes the operator's list: leaves removed, joins appended.
    let old_list: Vec<NodeId> = nodes.iter().map(|n| n.spec.id).collect();
    let new_list: Vec<NodeId> = after_nodes.iter().map(|n| n.spec.id).collect();
    let sampled = (args.keys > 0).then(|| {
        analysis::sample_moves(before, &after, &old_list, &new_list, sample_keys(args.keys))
    });
    let mut removed: Vec<String> = Vec::new();
    for name in &args.remove {
        if !removed.contains(name) {
            removed.push(name.clone());
        }
    }
    Ok(ChangeReport {
        added: added.iter().map(|n| n.name.clone()).collect(),
        removed,
        after: ring_report(&after, &all, rf, args.keys),
        cost: analysis::move_cost(before, &after, rf, &old_list, &new_list),
        sampled,
    })
}

fn render_nodes(out: &mut String, report: &RingReport, before: Option<&RingReport>) {
    let max = report
        .rows
        .iter()
        .map(|r| r.share.share)
        .fold(0.0, f64::max);
    let hottest = report.rows.iter().map(|r| r.load).fold(0.0, f64::max);
    let avg = 1.0 / report.nodes as f64;
    let mut headers = vec![
        ("node", Align::Left),
        ("weight", Align::Right),
        ("zone", Align::Left),
        ("tokens", Align::Right),
        ("share", Align::Right),
        ("fair", Align::Right),
        ("load", Align::Right),
        ("replicas", Align::Right),
        ("sampled", Align::Right),
    ];
    if before.is_some() {
        headers.push(("change pp", Align::Right));
    }
    headers.push(("share (│ = average)", Align::Left));
    let mut table = Table::new(&headers);
    for row in &report.rows {
        let s = &row.share;
        let mut cells = vec![
            row.name.clone(),
            s.weight.to_string(),
            s.zone.clone().unwrap_or_else(|| "-".into()),
            s.tokens.to_string(),
            pct(s.share, 2),
            pct(s.expected, 2),
            format!("{:.2}x", row.load),
            pct(s.replica_share, 2),
            row.sampled_share.map_or_else(|| "-".into(), |v| pct(v, 2)),
        ];
        if let Some(before) = before {
            let old = before
                .rows
                .iter()
                .find(|r| r.name == row.name)
                .map_or(0.0, |r| r.share.share);
            let diff = s.share - old;
            cells.push(if old == 0.0 {
                "new".into()
            } else {
                format!("{:+.2}", diff * 100.0)
            });
        }
        let mut b = bar(s.share, max, BAR_WIDTH, Some(avg));
        if row.load == hottest {
            b.push_str("  ◀ hottest");
        }
        cells.push(b);
        table.row(cells);
    }
    out.push_str(&table.render());
    let b = &report.balance;
    let _ = writeln!(
        out,
        "balance (exact): max/avg {:.3}x  min/avg {:.3}x  stddev {:.3} pp  CV {:.2}%",
        b.max_over_avg,
        b.min_over_avg,
        b.stddev * 100.0,
        b.cv * 100.0
    );
}

fn render_simulate(r: &SimulateReport) -> String {
    let mut out = String::new();
    let b = &r.before;
    let _ = writeln!(
        out,
        "{} nodes, {} vnodes per unit of weight, {} tokens, rf {}, ring digest {}",
        b.nodes,
        r.vnodes,
        b.tokens,
        r.rf,
        &b.digest[..16]
    );
    let _ = writeln!(
        out,
        "share: of the key space owned as primary (exact, from arcs); fair: weight/total; \
         load: share/fair; replicas: share of the {} copies held; sampled: of {} keys\n",
        r.rf, r.keys_sampled
    );
    render_nodes(&mut out, b, None);
    if let Some(c) = &r.change {
        let mut what = Vec::new();
        if !c.added.is_empty() {
            what.push(format!("add {}", c.added.join(", ")));
        }
        if !c.removed.is_empty() {
            what.push(format!("remove {}", c.removed.join(", ")));
        }
        let _ = writeln!(
            out,
            "\nafter {} ({} nodes, ring digest {}):\n",
            what.join(" and "),
            c.after.nodes,
            &c.after.digest[..16]
        );
        render_nodes(&mut out, &c.after, Some(b));
        render_cost(&mut out, c, r.rf);
    }
    let h = &r.hot_key;
    let _ = writeln!(
        out,
        "\nhot key carrying {} of requests, worst case on {}: that node serves {} of all requests ({:.2}x average);\n\
         \x20 with reads of it spread over its {} replicas: {} ({:.2}x average)",
        pct(h.share, 1),
        h.node,
        pct(h.node_traffic, 1),
        h.node_traffic_over_avg,
        h.spread_over_replicas,
        pct(h.spread_traffic, 1),
        h.spread_traffic_over_avg
    );
    out
}

fn render_cost(out: &mut String, c: &ChangeReport, rf: usize) {
    let cost = &c.cost;
    let sampled = |v: Option<u64>| match (&c.sampled, v) {
        (Some(s), Some(v)) => pct(v as f64 / s.keys as f64, 2),
        _ => "-".into(),
    };
    let mut t = Table::new(&[
        ("keys moved", Align::Left),
        ("exact", Align::Right),
        ("sampled", Align::Right),
    ]);
    t.row(vec![
        "ringkv (owner changes)".into(),
        pct(cost.owner_moved, 2),
        sampled(c.sampled.map(|s| s.owner_moved)),
    ]);
    t.row(vec![
        "hash % N".into(),
        pct(cost.modulo_moved, 2),
        sampled(c.sampled.map(|s| s.modulo_moved)),
    ]);
    t.row(vec![
        "ideal (weight that changes hands)".into(),
        pct(cost.ideal_moved, 2),
        "-".into(),
    ]);
    out.push('\n');
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "replica sets changed (rf {rf}): {} of the key space, in {} range moves; \
         ringkv moves {:.2}x the ideal, hash % N {:.2}x",
        pct(cost.replicas_moved, 2),
        cost.range_moves,
        cost.owner_moved / cost.ideal_moved.max(f64::MIN_POSITIVE),
        cost.modulo_moved / cost.ideal_moved.max(f64::MIN_POSITIVE),
    );
}

#[derive(Debug, Serialize)]
struct SweepRow {
    vnodes: u32,
    tokens: usize,
    balance: Balance,
    /// Bytes of the ring's lookup tables.
    table_bytes: usize,
}

/// Runs `ringkv ring sweep`.
pub(crate) fn sweep(args: &SweepArgs) -> Result<String> {
    if args.vnodes.is_empty() || args.vnodes.contains(&0) {
        bail!("--vnodes needs one or more counts of at least 1");
    }
    let nodes = sim_nodes(1, args.nodes, &args.weights, &args.zones)?;
    let mut rows = Vec::new();
    for &v in &args.vnodes {
        let ring = build(&nodes, v)?;
        let balance = analysis::balance(&analysis::shares(&ring, 1));
        rows.push(SweepRow {
            vnodes: v,
            tokens: ring.token_count(),
            balance,
            table_bytes: ring.table_bytes(),
        });
    }
    if args.json {
        return Ok(serde_json::to_string_pretty(&rows).expect("reports serialize") + "\n");
    }
    let mut out = format!(
        "{} nodes; balance of primary ownership, exact from arc lengths\n\n",
        args.nodes
    );
    let mut t = Table::new(&[
        ("vnodes", Align::Right),
        ("tokens", Align::Right),
        ("max/avg", Align::Right),
        ("min/avg", Align::Right),
        ("stddev", Align::Right),
        ("CV", Align::Right),
        ("tables", Align::Right),
    ]);
    for r in &rows {
        t.row(vec![
            r.vnodes.to_string(),
            r.tokens.to_string(),
            format!("{:.3}x", r.balance.max_over_avg),
            format!("{:.3}x", r.balance.min_over_avg),
            format!("{:.3} pp", r.balance.stddev * 100.0),
            pct(r.balance.cv, 2),
            human_bytes(r.table_bytes),
        ]);
    }
    out.push_str(&t.render());
    let first = rows.iter().find(|r| r.balance.cv < 0.05);
    let _ = match first {
        Some(r) => writeln!(
            out,
            "\nCV (standard deviation relative to the mean share) first falls below 5% at {} vnodes.",
            r.vnodes
        ),
        None => writeln!(out, "\nCV stays at or above 5% for every count tried; try more vnodes."),
    };
    Ok(out)
}

fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / f64::from(1 << 10)),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Sim {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn sim(argv: &[&str]) -> Result<String> {
        let mut full = vec!["sim"];
        full.extend_from_slice(argv);
        simulate(&Sim::try_parse_from(full)?.args)
    }

    #[test]
    fn simulate_prints_every_node_and_marks_the_hottest() {
        let out = sim(&["--nodes", "4", "--vnodes", "20", "--keys", "1000"]).unwrap();
        for i in 1..=4 {
            assert!(out.contains(&format!("node-{i} ")), "{out}");
        }
        assert_eq!(out.matches("◀ hottest").count(), 1, "{out}");
        assert!(out.contains("balance (exact)"), "{out}");
    }

    #[test]
    fn simulate_add_reports_moves_against_modulo_and_ideal() {
        let out = sim(&["--nodes", "10", "--vnodes", "50", "--add", "1", "--json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let cost = &v["change"]["cost"];
        assert!((cost["ideal_moved"].as_f64().unwrap() - 1.0 / 11.0).abs() < 1e-9);
        assert!((cost["modulo_moved"].as_f64().unwrap() - 10.0 / 11.0).abs() < 1e-9);
        let moved = cost["owner_moved"].as_f64().unwrap();
        assert!(moved > 0.05 && moved < 0.15, "{moved}");
        assert_eq!(v["change"]["added"][0], "node-11");
        let new_share = v["change"]["after"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "node-11")
            .unwrap()["share"]
            .as_f64()
            .unwrap();
        assert!((new_share - moved).abs() < 1e-9, "only the new node gains");
    }

    #[test]
    fn simulate_refuses_unknown_nodes_and_zero_weights() {
        let err = sim(&["--nodes", "3", "--remove", "node-9"]).unwrap_err();
        assert!(err.to_string().contains("no such node"), "{err}");
        let err = sim(&["--nodes", "3", "--weights", "1,0"]).unwrap_err();
        assert!(err.to_string().contains("weight 0 for node-2"), "{err}");
        assert!(sim(&["--nodes", "0"]).is_err());
        assert!(sim(&["--nodes", "3", "--hot-key-share", "1.5"]).is_err());
    }

    #[test]
    fn simulate_swap_at_the_same_size_counts_modulo_moves() {
        let out = sim(&[
            "--nodes", "5", "--vnodes", "50", "--remove", "node-2", "--add", "1", "--json",
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let cost = &v["change"]["cost"];
        assert!(
            (cost["modulo_moved"].as_f64().unwrap() - 0.8).abs() < 1e-9,
            "{cost}"
        );
        assert!(cost["ideal_moved"].as_f64().unwrap() > 0.19);
        let sampled = &v["change"]["sampled"];
        let frac = sampled["modulo_moved"].as_f64().unwrap() / sampled["keys"].as_f64().unwrap();
        assert!((frac - 0.8).abs() < 0.01, "{sampled}");
    }

    #[test]
    fn simulate_refuses_too_many_added_nodes() {
        let err = sim(&["--nodes", "10", "--add", "100000"]).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn simulate_is_deterministic() {
        let a = sim(&["--nodes", "5", "--vnodes", "10", "--remove", "node-2"]).unwrap();
        let b = sim(&["--nodes", "5", "--vnodes", "10", "--remove", "node-2"]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn hot_key_spreads_over_replicas() {
        let out = sim(&[
            "--nodes",
            "10",
            "--vnodes",
            "100",
            "--hot-key-share",
            "0.3",
            "--rf",
            "3",
            "--json",
            "--keys",
            "0",
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let h = &v["hot_key"];
        let node = h["node_traffic"].as_f64().unwrap();
        let spread = h["spread_traffic"].as_f64().unwrap();
        assert!(
            (node - spread - 0.2).abs() < 1e-9,
            "0.3 on one node vs 0.1 on each of three"
        );
    }

    #[test]
    fn sweep_balance_improves_with_vnodes() {
        #[derive(Debug, Parser)]
        struct Sw {
            #[command(flatten)]
            args: SweepArgs,
        }
        let args = Sw::try_parse_from(["sw", "--nodes", "20", "--vnodes", "1,300", "--json"])
            .unwrap()
            .args;
        let v: serde_json::Value = serde_json::from_str(&sweep(&args).unwrap()).unwrap();
        let cv = |i: usize| v[i]["balance"]["cv"].as_f64().unwrap();
        assert!(cv(0) > 0.5 && cv(1) < 0.1, "{} {}", cv(0), cv(1));
    }
}
