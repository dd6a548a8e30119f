//! `skiff image import|ls|rm`: the node's image store (`<data-dir>/agent/image-store`)
//! from the command line, for air-gapped use. Output follows `crictl images` / `crictl rmi`;
//! as crictl, `rm` refuses an image a container on this node uses (running or kept).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use runtime::images::{Image, ImageStore, Reference};

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ImageCommand {
    /// Import docker-archive or OCI-layout tarballs (optionally gzip/zstd compressed).
    Import {
        #[command(flatten)]
        dirs: DataDir,
        /// Tarballs to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        dirs: DataDir,
    },
    /// Remove images by reference or image ID; unused layers are deleted.
    #[command(alias = "rmi")]
    Rm {
        #[command(flatten)]
        dirs: DataDir,
        /// References (`busybox:1.36`) or image IDs.
        #[arg(required = true)]
        images: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct DataDir {
    /// Where state lives (the same directory `skiff server` / `skiff agent` use).
    #[arg(long, short = 'd', env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    fn path(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::server::default_data_dir)
    }

    fn open_store(&self) -> Result<ImageStore> {
        let root = image_store_dir(&self.path());
        ImageStore::open(&root)
            .with_context(|| format!("opening the image store {}", root.display()))
    }
}

/// The agent's image store inside a data dir.
pub fn image_store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("image-store")
}

/// As `skiff server`'s default (k3s: a system location for root, a per-user one otherwise).
pub fn run(args: ImageArgs) -> Result<()> {
    match args.command {
        ImageCommand::Import { dirs, files } => {
            let store = dirs.open_store()?;
            for file in files {
                let images = store
                    .import_tarball(&file)
                    .with_context(|| format!("importing {}", file.display()))?;
                for image in images {
                    for r in &image.references {
                        println!("imported {r} ({})", image.digest);
                    }
                }
            }
            Ok(())
        }
        ImageCommand::Ls { dirs } => {
            let store = dirs.open_store()?;
            print!("{}", format_table(&store.list()?));
            Ok(())
        }
        ImageCommand::Rm { dirs, images } => {
            let store = dirs.open_store()?;
            let layout = agent::pods::layout::Layout::new(dirs.path().join("agent"));
            for image in images {
                let found = store
                    .get(&image)
                    .with_context(|| format!("removing {image}"))?;
                let users = agent::node::image_gc::containers_by_image(&layout);
                if let Some(id) = users.get(found.digest.as_str()).and_then(|ids| ids.first()) {
                    if removes_the_image(&image, &found) {
                        bail!("removing {image}: image is in use by container {id}");
                    }
                }
                // Only if the name still means the image checked above (a pull may race).
                let removed = store
                    .remove_if(&image, &found.digest)
                    .with_context(|| format!("removing {image}"))?;
                for r in removed.references {
                    println!("Deleted: {r}");
                }
            }
            Ok(())
        }
    }
}

/// Whether removing `input` deletes `image` (its last name, or its ID), rather than one of
/// several names: only that is refused while a container uses the image.
fn removes_the_image(input: &str, image: &Image) -> bool {
    let by_name = Reference::parse(input)
        .ok()
        .is_some_and(|r| image.references.contains(&r.to_string()));
    !by_name || image.references.len() == 1
}

/// `crictl images` columns: one row per name.
fn table_rows(images: &[Image]) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    for image in images {
        let id: String = image.id.hex().chars().take(12).collect();
        for r in &image.references {
            let (repo, tag) = match Reference::parse(r) {
                Ok(p) => (p.name(), p.tag().unwrap_or("<none>").to_string()),
                Err(_) => (r.clone(), "<none>".to_string()),
            };
            rows.push([repo, tag, id.clone(), human_size(image.size)]);
        }
    }
    rows
}

/// Aligned like Go's tabwriter as crictl sets it up (minimum width 20, padding 3).
fn format_table(images: &[Image]) -> String {
    let header = ["IMAGE", "TAG", "IMAGE ID", "SIZE"].map(String::from);
    let rows: Vec<[String; 4]> = std::iter::once(header).chain(table_rows(images)).collect();
    let widths: Vec<usize> = (0..4)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].len() + 3)
                .max()
                .unwrap_or(0)
                .max(20)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c == 3 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

/// Docker's `units.HumanSize`: decimal units, 4 significant digits (`1.03MB`, `72.8MB`).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    let decimals = match v {
        v if v >= 1000.0 => 0,
        v if v >= 100.0 => 1,
        v if v >= 10.0 => 2,
        _ => 3,
    };
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_as_docker() {
        let cases = [
            (0, "0B"),
            (999, "999B"),
            (1000, "1kB"),
            (1_030_000, "1.03MB"),
            (72_800_000, "72.8MB"),
            (123_456_789, "123.5MB"),
            (1_234_567, "1.235MB"),
            (5_000_000_000, "5GB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_size(n), want, "{n}");
        }
    }
}
