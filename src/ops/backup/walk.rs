//! Walking the source: one tree blob per directory, children handled in parallel.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{Context, Virtual, file, parent_entry};
use crate::error::Result;
use crate::format::tree::{FLAG_SPARSE, Node, NodeKind, Timestamp, Tree};
use crate::id::BlobId;
use crate::repository::local_index::BlobLocation;

/// The kind of entry `meta` describes.
fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

/// A node with the metadata of `meta`, without content, target or subtree.
pub(crate) fn node_from_metadata(name: &[u8], meta: &Metadata) -> Node {
    let kind = kind_of(meta);
    let sparse = kind == NodeKind::File && (meta.blocks().saturating_mul(512)) < meta.size();
    Node {
        name: name.to_vec(),
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        user: crate::platform::user_name(meta.uid()).unwrap_or_default(),
        group: crate::platform::group_name(meta.gid()).unwrap_or_default(),
        mtime: Timestamp {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec() as u32,
        },
        ctime: Timestamp {
            secs: meta.ctime(),
            nanos: meta.ctime_nsec() as u32,
        },
        size: if kind == NodeKind::File {
            meta.size()
        } else {
            0
        },
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        rdev: meta.rdev(),
        flags: if sparse { FLAG_SPARSE } else { 0 },
        ..Node::default()
    }
}

/// Extended attributes of `path` (not following symlinks), sorted by name.
pub(super) fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    sorted_xattrs(xattr::list(path), |name| xattr::get(path, name))
}

/// [`read_xattrs`] of an open file: no lookup of its path again.
pub(super) fn read_file_xattrs(file: &std::fs::File) -> Vec<(Vec<u8>, Vec<u8>)> {
    use xattr::FileExt;
    sorted_xattrs(file.list_xattr(), |name| file.get_xattr(name))
}

fn sorted_xattrs(
    names: std::io::Result<xattr::XAttrs>,
    get: impl Fn(&OsStr) -> std::io::Result<Option<Vec<u8>>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(names) = names else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .filter_map(|n| {
            let value = get(&n).ok().flatten()?;
            Some((n.as_bytes().to_vec(), value))
        })
        .collect();
    out.sort();
    out
}

/// Whether `meta` shows the same kind, inode, size and times as `old` recorded: any change
/// to content, link target or extended attributes would have moved the change time.
fn metadata_unchanged(old: &Node, meta: &Metadata) -> bool {
    let kind = kind_of(meta);
    let size = if kind == NodeKind::File {
        meta.size()
    } else {
        0
    };
    old.kind == kind
        && old.size == size
        && old.mtime.secs == meta.mtime()
        && old.mtime.nanos == meta.mtime_nsec() as u32
        && old.ctime.secs == meta.ctime()
        && old.ctime.nanos == meta.ctime_nsec() as u32
        && old.inode == meta.ino()
}

/// The extended attributes of `path`, taken from the parent snapshot when its entry shows
/// that nothing about the inode changed since.
fn xattrs_of(
    ctx: &Context<'_>,
    path: &Path,
    meta: &Metadata,
    old: Option<&Node>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    match old {
        Some(old) if !ctx.force_read && metadata_unchanged(old, meta) => old.xattrs.clone(),
        _ => read_xattrs(path),
    }
}

/// Whether an unchanged file's chunks can be reused: always, unless packs have vanished
/// since the parent snapshot, in which case each chunk must still be stored.
fn content_still_stored(ctx: &Context<'_>, old: &Node) -> Result<bool> {
    if !ctx.saver.packs_were_missing() {
        return Ok(true);
    }
    for id in &old.content {
        if !ctx.saver.has(id)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The tree of the virtual root (the source paths' ancestors).
pub(crate) fn virtual_tree(
    ctx: &Context<'_>,
    level: &BTreeMap<Vec<u8>, Virtual>,
    parent: Option<&Tree>,
) -> Result<Tree> {
    let nodes: Vec<Option<Node>> = level
        .par_iter()
        .map(|(name, v)| {
            let old = parent_entry(parent, name);
            match v {
                Virtual::Source(path) => {
                    let meta = match std::fs::symlink_metadata(path) {
                        Ok(m) => m,
                        Err(e) => {
                            ctx.problem(path, e);
                            return Ok(None);
                        }
                    };
                    let previous = old.map(|node| (node.clone(), None));
                    entry_node(ctx, None, path, name, &meta, previous, None)
                }
                Virtual::Ancestor(path, children) => {
                    let meta = match std::fs::symlink_metadata(path) {
                        Ok(m) => m,
                        Err(e) => {
                            ctx.problem(path, e);
                            return Ok(None);
                        }
                    };
                    let mut node = node_from_metadata(name, &meta);
                    node.kind = NodeKind::Dir;
                    let old_tree = load_parent_subtree(ctx, old, None).map(|(_, tree)| tree);
                    let tree = virtual_tree(ctx, children, old_tree.as_ref())?;
                    node.subtree = Some(ctx.save_tree(&tree)?);
                    Ok(Some(node))
                }
            }
        })
        .collect::<Result<_>>()?;
    let mut tree = Tree {
        nodes: nodes.into_iter().flatten().collect(),
    };
    tree.sort();
    Ok(tree)
}

/// The parent snapshot's tree for a directory, with its id. `located` is where the index
/// placed it, when the caller already asked.
fn load_parent_subtree(
    ctx: &Context<'_>,
    old: Option<&Node>,
    located: Option<BlobLocation>,
) -> Option<(BlobId, Tree)> {
    let id = old.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
    // An unreadable parent tree only costs speed: everything below is read afresh.
    let tree = match located.filter(|loc| loc.id == id) {
        Some(loc) => ctx.repo.load_tree_at(&loc),
        None => ctx.repo.load_tree(&id),
    };
    Some((id, tree.ok()?))
}

/// Where the index stores the trees of the parent's directories among `nodes`, asked in
/// one go: one read transaction for a whole directory rather than one per subdirectory.
fn locate_subtrees<'n>(
    ctx: &Context<'_>,
    nodes: impl Iterator<Item = &'n Node>,
) -> HashMap<BlobId, BlobLocation> {
    let ids: Vec<BlobId> = nodes
        .filter(|n| n.kind == NodeKind::Dir)
        .filter_map(|n| n.subtree)
        .collect();
    if ids.is_empty() {
        return HashMap::new();
    }
    // Not found here only means each is looked up again, alone, when it is loaded.
    let Ok(found) = ctx.repo.index().and_then(|index| index.lookup_many(&ids)) else {
        return HashMap::new();
    };
    found
        .into_iter()
        .flatten()
        .map(|loc| (loc.id, loc))
        .collect()
}

/// The node for one source entry of any kind; `None` when it could not be recorded.
/// `parent` is its directory, when the walk has one; `previous` is the parent snapshot's
/// entry of the same name, with where its tree is stored if known. `opened` is the file
/// itself, already open for reading, when `meta` was taken from it.
fn entry_node(
    ctx: &Context<'_>,
    parent: Option<&OpenDir<'_>>,
    path: &Path,
    name: &[u8],
    meta: &Metadata,
    previous: Option<(Node, Option<BlobLocation>)>,
    opened: Option<std::fs::File>,
) -> Result<Option<Node>> {
    let (old, old_subtree) = previous.map_or((None, None), |(node, at)| (Some(node), at));
    // An unchanged file or symlink is the parent's entry as it was: decided from the
    // metadata alone, before a node (with its owner's names) is built for nothing.
    if !ctx.force_read
        && let Some(previous) = &old
        && matches!(previous.kind, NodeKind::File | NodeKind::Symlink)
        && metadata_unchanged(previous, meta)
    {
        if previous.kind == NodeKind::Symlink {
            // A link's target cannot change without a new inode or change time.
            ctx.progress.advance(1, 0);
            return Ok(old);
        }
        if content_still_stored(ctx, previous)? {
            ctx.files_unchanged.fetch_add(1, Ordering::Relaxed);
            ctx.progress.advance(1, 0);
            return Ok(old);
        }
    }
    let mut node = node_from_metadata(name, meta);
    match node.kind {
        NodeKind::File => {
            let parent = parent.and_then(OpenDir::file);
            match file::read_content(ctx, parent, opened, path, &mut node, old.as_ref()) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {
                    ctx.problem(path, "vanished during the backup");
                    return Ok(None);
                }
                Err(e @ crate::Error::Io { .. }) => {
                    ctx.problem(path, io_message(&e));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            if old.is_some() {
                &ctx.files_changed
            } else {
                &ctx.files_new
            }
            .fetch_add(1, Ordering::Relaxed);
        }
        NodeKind::Dir => {
            ctx.dirs.fetch_add(1, Ordering::Relaxed);
            node.xattrs = xattrs_of(ctx, path, meta, old.as_ref());
            let (old_id, old_tree) = load_parent_subtree(ctx, old.as_ref(), old_subtree).unzip();
            let tree = match dir_tree(ctx, path, meta.dev(), old_tree) {
                Ok(tree) => tree,
                Err(e @ crate::Error::Io { .. }) => {
                    ctx.problem(path, io_message(&e));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            // A tree that came out as the parent's, just read from the repository, is
            // known to be stored: no need to ask the index again.
            node.subtree = Some(ctx.save_tree_unless(&tree, old_id)?);
        }
        NodeKind::Symlink => {
            node.xattrs = read_xattrs(path);
            match std::fs::read_link(path) {
                Ok(target) => node.target = target.as_os_str().as_bytes().to_vec(),
                Err(e) => {
                    ctx.problem(path, e);
                    return Ok(None);
                }
            }
        }
        NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
            node.xattrs = read_xattrs(path);
        }
    }
    ctx.progress.advance(1, 0);
    Ok(Some(node))
}

fn io_message(e: &crate::Error) -> String {
    match e {
        crate::Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// A directory whose new and changed files are opened through it, by name: that spares
/// the kernel a walk of each file's whole path. It is opened for the first such file, so an
/// unchanged directory costs no open.
struct OpenDir<'a> {
    path: &'a Path,
    file: std::sync::OnceLock<Option<std::fs::File>>,
}

impl<'a> OpenDir<'a> {
    fn new(path: &'a Path) -> Self {
        OpenDir {
            path,
            file: std::sync::OnceLock::new(),
        }
    }

    /// The open directory; `None` if it cannot be opened, and files are opened by path.
    fn file(&self) -> Option<&std::fs::File> {
        self.file
            .get_or_init(|| std::fs::File::open(self.path).ok())
            .as_ref()
    }
}

/// The tree of a real directory, its entries handled in parallel.
fn dir_tree(ctx: &Context<'_>, dir: &Path, device: u64, old: Option<Tree>) -> Result<Tree> {
    let mut entries: Vec<(std::ffi::OsString, std::fs::DirEntry)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| crate::Error::io(dir, e))? {
        match entry {
            Ok(entry) => entries.push((entry.file_name(), entry)),
            Err(e) => ctx.problem(dir, e),
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let handle = OpenDir::new(dir);
    let old_nodes = old.map(|t| t.nodes).unwrap_or_default();
    let subtrees = locate_subtrees(ctx, old_nodes.iter());
    // Pair each entry with its parent-snapshot node, moved out of the parent tree rather
    // than cloned: both lists are sorted by name bytes, so one merge pass does it.
    let mut old_nodes = old_nodes.into_iter().peekable();
    let paired: Vec<_> = entries
        .into_iter()
        .map(|(name, entry)| {
            let bytes = OsStr::as_bytes(&name);
            while old_nodes.next_if(|n| n.name.as_slice() < bytes).is_some() {}
            let old = old_nodes.next_if(|n| n.name.as_slice() == bytes);
            let located = old
                .as_ref()
                .and_then(|n| n.subtree)
                .and_then(|id| subtrees.get(&id).copied());
            (name, entry, old, located)
        })
        .collect();
    let nodes: Vec<Option<Node>> = paired
        .into_par_iter()
        .map(|(name, entry, old_node, old_subtree)| {
            let path = dir.join(&name);
            if ctx.excludes.is_excluded(&path) {
                return Ok(None);
            }
            let name_bytes = OsStr::as_bytes(&name);
            // A regular file the parent snapshot does not have is read whatever its
            // metadata says: it is opened first and its metadata taken from the open file,
            // one lookup of its name instead of two. Anything unexpected (it cannot be
            // opened, or is no longer a regular file) takes the usual way below.
            if old_node.is_none()
                && entry.file_type().is_ok_and(|t| t.is_file())
                && let Some((opened, meta)) = file::open_regular(handle.file(), name_bytes, &path)
            {
                return entry_node(
                    ctx,
                    Some(&handle),
                    &path,
                    name_bytes,
                    &meta,
                    None,
                    Some(opened),
                );
            }
            // Metadata comes from the directory handle (fstatat on the entry's name), which
            // spares the kernel a walk of the whole path, and on all threads: in a large
            // directory it is most of the work.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    ctx.problem(&path, "vanished during the backup");
                    return Ok(None);
                }
                Err(e) => {
                    ctx.problem(&path, e);
                    return Ok(None);
                }
            };
            if ctx.one_file_system && meta.is_dir() && meta.dev() != device {
                // A mount point: recorded as an empty directory, its contents left out.
                let mut node = node_from_metadata(name_bytes, &meta);
                node.subtree = Some(ctx.save_tree(&Tree::default())?);
                return Ok(Some(node));
            }
            entry_node(
                ctx,
                Some(&handle),
                &path,
                name_bytes,
                &meta,
                old_node.map(|node| (node, old_subtree)),
                None,
            )
        })
        .collect::<Result<_>>()?;
    Ok(Tree {
        nodes: nodes.into_iter().flatten().collect(),
    })
}
