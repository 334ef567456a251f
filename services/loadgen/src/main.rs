//! `loadgen`: see the library's documentation, and `loadgen --help`.

use std::time::Duration;

use clap::{Parser, Subcommand};
use keh_loadgen::driver::{Bounds, Pace};
use keh_loadgen::{Api, CommandRun, baseline, workload};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Drives KubeEstateHub over HTTP (closed or open loop), measures event-to-visible lag, and runs the raw baselines"
)]
struct Cli {
    /// Base URL of the platform.
    #[arg(
        long,
        env = "KEH_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Base URL of the query API when it runs apart from the command API (roles started one
    /// per process): reads and sign-in go there, commands to --url.
    #[arg(long, env = "KEH_QUERY_URL", global = true)]
    query_url: Option<String>,
    /// Clients (closed loop), or the most requests in flight at once (open loop).
    #[arg(long, default_value_t = 32, global = true)]
    concurrency: usize,
    /// Open loop: requests per second, sent whether or not earlier ones have answered
    /// (latency counts from when each request was due). Without it: a closed loop.
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// How long to run, in seconds (runs that take a --count stop at whichever comes first).
    #[arg(long, default_value_t = 20, global = true)]
    seconds: u64,
    /// Random seed (the same seed sends the same requests).
    #[arg(long, default_value_t = 42, global = true)]
    seed: u64,
    /// An access token or API key to send (else --username/--password sign in, else
    /// requests are anonymous).
    #[arg(long, env = "KEH_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "KEH_LOADGEN_USERNAME", global = true)]
    username: Option<String>,
    #[arg(
        long,
        env = "KEH_LOADGEN_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    password: Option<String>,
    /// Print the summary as one JSON object (for bench/run).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create listings through the command API.
    Create {
        #[arg(long, default_value_t = 1000)]
        count: u64,
    },
    /// The command mix (20% creates, 30% price changes, 20% status changes Active ⇄ Pending,
    /// 30% detail edits) over a working set it creates first; measures event-to-visible lag.
    Commands {
        /// Listings of the working set.
        #[arg(long, default_value_t = 1000)]
        working_set: usize,
        /// Share of commands whose visibility in the query API is polled (every command is
        /// watched on the live feed); 0 measures no lag.
        #[arg(long, default_value_t = 0.2)]
        lag_sample: f64,
    },
    /// The search mix against the query API.
    Search,
    /// GET one listing by key, over up to --keys listings the query API serves.
    Get {
        #[arg(long, default_value_t = 5000)]
        keys: usize,
    },
    /// One-event commands side by side with the peer: ensures --listings listings exist
    /// (creating what is missing), then sends price changes with fresh prices to random ones.
    PriceChanges {
        #[arg(long, default_value_t = 1000)]
        listings: usize,
    },
    /// The benchmark peer (cqrs-demo, --url http://127.0.0.1:3030): `open` its --accounts
    /// accounts, then `deposits` to random ones or `reads` of random ones.
    Peer {
        #[arg(value_enum)]
        phase: PeerPhase,
        #[arg(long, default_value_t = 1000)]
        accounts: u64,
        /// Account ids are `{prefix}-{n}`.
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// GET a path repeatedly (for example `/` of `loadgen serve-empty`).
    Path {
        #[arg(default_value = "/")]
        path: String,
    },
    /// Serve an empty axum handler on --addr (the baseline for get-by-key).
    ServeEmpty {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: std::net::SocketAddr,
    },
    /// Command latency on a listing with a long history against fresh listings: appends
    /// --events changes to one listing, then times --samples detail edits on it, each
    /// followed by one on a new listing (alternating, one client, so both see the same
    /// background load).
    History {
        #[arg(long, default_value_t = 1000)]
        events: u64,
        #[arg(long, default_value_t = 200)]
        samples: u64,
    },
    /// Wait until a JetStream stream holds --count messages; report the rate from its
    /// first message (how fast a publisher filled it).
    WaitStream {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long)]
        stream: String,
        #[arg(long)]
        count: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Delete the JetStream streams whose names start with --prefix (benchmark leftovers).
    DeleteStreams {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long)]
        prefix: String,
    },
    /// Raw JetStream baseline: pipelined publish with Nats-Msg-Id, then a pull consumer
    /// acknowledging each message (a temporary stream, deleted afterwards).
    Jetstream {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Payload size in bytes (an event envelope is about 1 KiB).
        #[arg(long, default_value_t = 1024)]
        payload: usize,
        /// Messages in flight at once (the relay's batch).
        #[arg(long, default_value_t = 500)]
        window: usize,
    },
}

/// What `loadgen peer` does.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PeerPhase {
    Open,
    Deposits,
    Reads,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pace = match cli.rate {
        Some(rate) => Pace::Open {
            rate,
            max_in_flight: cli.concurrency,
        },
        None => Pace::Closed {
            clients: cli.concurrency,
        },
    };
    let duration = Some(Duration::from_secs(cli.seconds));
    let api = Api::new(&cli.url, cli.concurrency)?
        .with_query_base(cli.query_url.as_deref())
        .with_token(cli.token.clone());
    let api = match (&cli.token, &cli.username, &cli.password) {
        (None, Some(username), Some(password)) => api.sign_in(username, password).await?,
        _ => api,
    };
    let summary = match cli.command {
        Command::Create { count } => {
            let seed = cli.seed;
            keh_loadgen::driver::drive(
                "create",
                pace,
                Bounds {
                    count: Some(count),
                    duration: None,
                },
                move |i| {
                    let api = api.clone();
                    async move {
                        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i));
                        let status = match api
                            .request(reqwest::Method::POST, "/api/v1/listings")
                            .json(&workload::listing(&mut rng))
                            .send()
                            .await
                        {
                            Ok(r) => r.status().as_u16().to_string(),
                            Err(e) => keh_loadgen::failure_kind(&e),
                        };
                        keh_loadgen::driver::Outcome {
                            operation: None,
                            status,
                        }
                    }
                },
            )
            .await
        }
        Command::Commands {
            working_set,
            lag_sample,
        } => {
            let listings =
                keh_loadgen::create_listings(&api, working_set, cli.concurrency, cli.seed).await;
            anyhow::ensure!(
                !listings.is_empty(),
                "could not create the working set (signed in as an agent or administrator?)"
            );
            keh_loadgen::run_commands(
                &api,
                listings,
                CommandRun {
                    pace,
                    bounds: Bounds {
                        count: None,
                        duration,
                    },
                    seed: cli.seed,
                    lag_sample,
                },
            )
            .await?
        }
        Command::Search => {
            let seed = cli.seed;
            keh_loadgen::run_reads(
                &api,
                "search",
                pace,
                Bounds {
                    count: None,
                    duration,
                },
                move |i| workload::search_query(&mut StdRng::seed_from_u64(seed.wrapping_add(i))),
            )
            .await
        }
        Command::Get { keys } => {
            let keys = keh_loadgen::listing_keys(&api, keys).await?;
            anyhow::ensure!(!keys.is_empty(), "the query API serves no listings");
            keh_loadgen::run_reads(
                &api,
                "get",
                pace,
                Bounds {
                    count: None,
                    duration,
                },
                move |i| {
                    let index = usize::try_from(i).unwrap_or_default() % keys.len();
                    format!("/api/v1/listings/{}", keys[index])
                },
            )
            .await
        }
        Command::PriceChanges { listings } => {
            let mut keys = keh_loadgen::listing_keys(&api, listings).await?;
            if keys.len() < listings {
                let created = keh_loadgen::create_listings(
                    &api,
                    listings - keys.len(),
                    cli.concurrency,
                    cli.seed,
                )
                .await;
                keys.extend(created.into_iter().map(|t| t.key));
            }
            anyhow::ensure!(
                !keys.is_empty(),
                "no listings (signed in as an agent or administrator?)"
            );
            let tracked = keys
                .into_iter()
                .map(|key| keh_loadgen::workload::Tracked {
                    key,
                    price: 0,
                    pending: false,
                })
                .collect();
            keh_loadgen::versus::price_changes(
                &api,
                tracked,
                pace,
                Bounds {
                    count: None,
                    duration,
                },
                cli.seed,
            )
            .await
        }
        Command::Peer {
            phase,
            accounts,
            prefix,
        } => {
            let bounds = Bounds {
                count: None,
                duration,
            };
            match phase {
                PeerPhase::Open => {
                    keh_loadgen::versus::open_accounts(&api, &prefix, accounts, cli.concurrency)
                        .await
                }
                PeerPhase::Deposits => {
                    keh_loadgen::versus::deposits(&api, &prefix, accounts, pace, bounds, cli.seed)
                        .await
                }
                PeerPhase::Reads => {
                    keh_loadgen::versus::account_reads(
                        &api, &prefix, accounts, pace, bounds, cli.seed,
                    )
                    .await
                }
            }
        }
        Command::Path { path } => {
            keh_loadgen::run_reads(
                &api,
                "path",
                pace,
                Bounds {
                    count: None,
                    duration,
                },
                move |_| path.clone(),
            )
            .await
        }
        Command::ServeEmpty { addr } => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            baseline::serve_empty(listener).await?;
            return Ok(());
        }
        Command::History { events, samples } => {
            let (long, fresh) =
                keh_loadgen::history_latency(&api, events, samples, cli.seed).await?;
            long.print(cli.json);
            fresh
        }
        Command::WaitStream {
            nats_url,
            stream,
            count,
            timeout,
        } => baseline::wait_stream(&nats_url, &stream, count, Duration::from_secs(timeout)).await?,
        Command::DeleteStreams { nats_url, prefix } => {
            for name in baseline::delete_streams(&nats_url, &prefix).await? {
                println!("deleted stream {name}");
            }
            return Ok(());
        }
        Command::Jetstream {
            nats_url,
            messages,
            payload,
            window,
        } => {
            let (published, consumed) =
                baseline::jetstream(&nats_url, messages, payload, window).await?;
            published.print(cli.json);
            consumed
        }
    };
    summary.print(cli.json);
    Ok(())
}
