//! What a container runs and as whom: the command line (kubelet's `$(VAR)` expansion of
//! command and args, then containerd's — Docker's — rules for combining them with the
//! image's Entrypoint and Cmd), the working directory, and the process identity.
//!
//! Identity is two steps because one needs the container's root filesystem:
//! [`user`] decides from the pod and image alone what the kubelet and containerd pass on
//! (a uid or a user name, maybe a group, supplemental groups), and [`resolve_user`] turns
//! that into numeric ids given the contents of the rootfs's `/etc/passwd` and
//! `/etc/group`, as containerd's `WithUser` / `WithAdditionalGIDs` do. Both are pure.
//!
//! Upstream facts kept on purpose:
//! - The group half of an image's `USER uid:gid` is ignored: the kubelet passes only the
//!   user as `runAsUser`/`runAsUsername`, and containerd then takes the primary group
//!   from `/etc/passwd` (0 when the uid has no entry) — kubernetes#93666, containerd#11607.
//! - An image without `USER` runs as uid 0 (the kubelet treats it as root).

use k8s_openapi::api::core::v1::{Container, Pod};
use runtime::images::ImageConfig;
use runtime::shim::UserIds;

use super::env::{env_map, expand};

/// Why a command line cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// containerd's message when neither the pod nor the image names a program.
    #[error("no command specified")]
    NoCommand,
}

/// The process arguments: `command` (expanded) replaces the image's Entrypoint and drops its
/// Cmd; `args` (expanded) replace the Cmd; with neither, Entrypoint + Cmd. An image
/// Entrypoint of exactly `[""]` means "none" (Docker's reset). `kubelet_vars` are
/// [`super::env::ContainerEnv::kubelet_vars`] — the image's env is not visible to `$(VAR)`
/// upstream, so do not pass the process environment here.
pub fn command_line(
    container: &Container,
    image: &ImageConfig,
    kubelet_vars: &[String],
) -> Result<Vec<String>, CommandError> {
    let vars = env_map(kubelet_vars);
    let expand_all = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .iter()
            .flatten()
            .map(|s| expand(s, |name| vars.get(name).cloned()))
            .collect()
    };
    let mut command = expand_all(&container.command);
    let mut args = expand_all(&container.args);
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            command = image.entrypoint.clone();
        }
    }
    if command.is_empty() && args.is_empty() {
        return Err(CommandError::NoCommand);
    }
    command.extend(args);
    Ok(command)
}

/// The working directory: the container's `workingDir`, else the image's `WorkingDir`,
/// else `None` (the runtime default `/`). Not `$(VAR)`-expanded, as upstream.
pub fn working_dir(container: &Container, image: &ImageConfig) -> Option<String> {
    container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
}

/// Who the process runs as, before looking at the container's `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: UserRef,
    /// `runAsGroup`; `None` takes the user's primary group from `/etc/passwd` (or 0).
    pub group: Option<u32>,
    /// The kubelet's supplemental groups: `fsGroup`, then `supplementalGroups`. Callers
    /// append volume-provided groups (upstream `GetExtraSupplementalGroupsForPod`).
    pub supplemental_groups: Vec<u32>,
    /// `supplementalGroupsPolicy: Merge` (default): also the groups `/etc/group` lists the
    /// user in. `Strict`: only the groups above.
    pub merge_group_file: bool,
}

/// A user by id or by name (the latter only from a non-numeric image `USER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(u32),
    Name(String),
}

/// Why the container may not run as decided; messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserIsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")]
    ImageRunsAsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})")]
    NonNumericImageUser {
        user: String,
        pod: String,
        container: String,
    },
    #[error("{field} {value} is out of range for a user or group id")]
    IdOutOfRange { field: &'static str, value: i64 },
    /// containerd's `WithUsername` with no matching passwd entry (worded as runc does).
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
}

/// Decides the identity as kubelet (`determineEffectiveSecurityContext`,
/// `verifyRunAsNonRoot`) and containerd (`generateUserString`, supplemental groups) do:
/// `runAsUser`/`runAsGroup` from the container's securityContext, else the pod's; without
/// `runAsUser`, the image `USER` (the part before `:`), numeric → uid, else a name;
/// none → uid 0. `runAsNonRoot: true` refuses uid 0 and unverifiable names.
pub fn user(pod: &Pod, container: &Container, image: &ImageConfig) -> Result<UserSpec, UserError> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group));
    let run_as_non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);

    // containerd's getUserFromImage: the user half, numeric if it parses as int64.
    let image_user = image
        .user
        .as_deref()
        .map(|u| u.split(':').next().unwrap_or(""))
        .unwrap_or("");
    let image_uid: Option<i64> = if image_user.is_empty() {
        Some(0)
    } else {
        image_user.parse::<i64>().ok()
    };

    let who = || format_pod(pod);
    if run_as_non_root {
        match (run_as_user, image_uid) {
            (Some(0), _) => {
                return Err(UserError::RunAsUserIsRoot {
                    pod: who(),
                    container: container.name.clone(),
                })
            }
            (Some(_), _) => {}
            (None, Some(0)) => {
                return Err(UserError::ImageRunsAsRoot {
                    pod: who(),
                    container: container.name.clone(),
                })
            }
            (None, Some(_)) => {}
            (None, None) => {
                return Err(UserError::NonNumericImageUser {
                    user: image_user.to_string(),
                    pod: who(),
                    container: container.name.clone(),
                })
            }
        }
    }

    let user = match (run_as_user, image_uid) {
        (Some(uid), _) => UserRef::Id(id("runAsUser", uid)?),
        (None, Some(uid)) => UserRef::Id(id("image user", uid)?),
        (None, None) => UserRef::Name(image_user.to_string()),
    };
    let group = run_as_group.map(|g| id("runAsGroup", g)).transpose()?;

    let mut supplemental_groups = Vec::new();
    if let Some(fs_group) = pod_sc.and_then(|s| s.fs_group) {
        supplemental_groups.push(id("fsGroup", fs_group)?);
    }
    for g in pod_sc
        .and_then(|s| s.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
    {
        supplemental_groups.push(id("supplementalGroups", *g)?);
    }
    let merge_group_file =
        pod_sc.and_then(|s| s.supplemental_groups_policy.as_deref()) != Some("Strict");
    Ok(UserSpec {
        user,
        group,
        supplemental_groups,
        merge_group_file,
    })
}

fn id(field: &'static str, value: i64) -> Result<u32, UserError> {
    u32::try_from(value).map_err(|_| UserError::IdOutOfRange { field, value })
}

/// Upstream `format.Pod`: `name_namespace(uid)`.
fn format_pod(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )
}

/// Resolves a [`UserSpec`] against the rootfs's `/etc/passwd` and `/etc/group` contents
/// (`None` when the file does not exist), as containerd does:
/// - uid without group: the passwd entry's primary group, else gid 0;
/// - name: its passwd entry (an error when absent), with `runAsGroup` if set;
/// - uid with group: used as is, no lookup;
/// - additional groups: the primary gid, the groups `/etc/group` lists the user's name in
///   (unless the policy is Strict; a group named like the user is not "supplemental"),
///   and the supplemental groups — sorted, without duplicates.
pub fn resolve_user(
    spec: &UserSpec,
    passwd: Option<&str>,
    group_file: Option<&str>,
) -> Result<UserIds, UserError> {
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let (uid, gid, name) = match (&spec.user, spec.group) {
        (UserRef::Id(uid), Some(gid)) => (*uid, gid, name_of(&users, *uid)),
        (UserRef::Id(uid), None) => match users.iter().find(|u| u.uid == *uid as i64) {
            Some(u) => (u.uid as u32, u.gid as u32, Some(u.name.clone())),
            None => (*uid, 0, None),
        },
        (UserRef::Name(name), group) => {
            let u = users
                .iter()
                .find(|u| &u.name == name)
                .ok_or_else(|| UserError::UnknownUser(name.clone()))?;
            (
                u.uid as u32,
                group.unwrap_or(u.gid as u32),
                Some(name.clone()),
            )
        }
    };

    let mut gids = vec![gid];
    if spec.merge_group_file {
        if let (Some(name), Some(text)) = (name, group_file) {
            gids.extend(
                parse_group(text)
                    .into_iter()
                    .filter(|g| g.name != name && g.members.contains(&name))
                    .map(|g| g.gid as u32),
            );
        }
    }
    gids.extend(&spec.supplemental_groups);
    gids.sort_unstable();
    gids.dedup();
    Ok(UserIds {
        uid,
        gid,
        additional_gids: gids,
    })
}

fn name_of(users: &[PasswdEntry], uid: u32) -> Option<String> {
    users
        .iter()
        .find(|u| u.uid == uid as i64)
        .map(|u| u.name.clone())
}

/// One `/etc/passwd` line as moby's `user` package reads it: fields split on `:`,
/// numbers that do not parse read as 0, blank lines skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: i64,
    pub gid: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: i64,
    pub members: Vec<String>,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    lines(text)
        .map(|f| PasswdEntry {
            name: f.first().copied().unwrap_or("").to_string(),
            uid: number(f.get(2)),
            gid: number(f.get(3)),
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    lines(text)
        .map(|f| GroupEntry {
            name: f.first().copied().unwrap_or("").to_string(),
            gid: number(f.get(2)),
            members: f
                .get(3)
                .filter(|m| !m.is_empty())
                .map(|m| m.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        })
        .collect()
}

fn lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(':').collect())
}

fn number(field: Option<&&str>) -> i64 {
    field.and_then(|f| f.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn container(command: &[&str], args: &[&str]) -> Container {
        let list = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        Container {
            name: "app".into(),
            command: list(command),
            args: list(args),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_combine_like_docker() {
        let img = image(&["/entry.sh"], &["serve", "--port=80"]);
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &["/entry.sh", "serve", "--port=80"]),
            (&[], &["run"], &["/entry.sh", "run"]),
            (&["/bin/sh", "-c"], &[], &["/bin/sh", "-c"]),
            (&["/bin/sh"], &["-c", "date"], &["/bin/sh", "-c", "date"]),
        ];
        for (command, args, want) in cases {
            let got = command_line(&container(command, args), &img, &[]).unwrap();
            assert_eq!(got, *want, "command {command:?} args {args:?}");
        }
        // Only Cmd.
        assert_eq!(
            command_line(
                &container(&[], &[]),
                &image(&[], &["nginx", "-g", "daemon off;"]),
                &[]
            )
            .unwrap(),
            ["nginx", "-g", "daemon off;"]
        );
        // ENTRYPOINT [""] is a reset.
        assert_eq!(
            command_line(&container(&[], &[]), &image(&[""], &["echo"]), &[]).unwrap(),
            ["echo"]
        );
    }

    #[test]
    fn no_command_anywhere_is_containerds_error() {
        let err = command_line(&container(&[], &[]), &image(&[], &[]), &[]).unwrap_err();
        assert_eq!(err.to_string(), "no command specified");
        let err = command_line(&container(&[], &[]), &image(&[""], &[]), &[]).unwrap_err();
        assert_eq!(err, CommandError::NoCommand);
    }

    #[test]
    fn command_and_args_expand_kubelet_vars() {
        let vars = ["GREETING=hello".to_string(), "NAME=world".to_string()];
        let c = container(
            &["echo", "$(GREETING)"],
            &["$(NAME)!", "$$(NAME)", "$(PATH)"],
        );
        assert_eq!(
            command_line(&c, &image(&[], &[]), &vars).unwrap(),
            ["echo", "hello", "world!", "$(NAME)", "$(PATH)"]
        );
    }

    #[test]
    fn working_dir_prefers_the_container() {
        let mut img = image(&[], &[]);
        let mut c = container(&[], &[]);
        assert_eq!(working_dir(&c, &img), None);
        img.working_dir = Some("/app".into());
        assert_eq!(working_dir(&c, &img).as_deref(), Some("/app"));
        c.working_dir = Some("/data".into());
        assert_eq!(working_dir(&c, &img).as_deref(), Some("/data"));
        c.working_dir = Some(String::new());
        assert_eq!(working_dir(&c, &img).as_deref(), Some("/app"));
    }

    fn pod(pod_sc: Option<PodSecurityContext>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                security_context: pod_sc,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_user(user: Option<&str>) -> ImageConfig {
        ImageConfig {
            user: user.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn user_comes_from_security_context_then_image() {
        let c = container(&[], &[]);
        let spec = user(&pod(None), &c, &with_user(None)).unwrap();
        assert_eq!(spec.user, UserRef::Id(0));
        assert_eq!(spec.group, None);
        assert!(spec.merge_group_file);

        let spec = user(&pod(None), &c, &with_user(Some("1000:50"))).unwrap();
        assert_eq!(
            spec.user,
            UserRef::Id(1000),
            "image group ignored, as upstream"
        );
        assert_eq!(spec.group, None);

        let spec = user(&pod(None), &c, &with_user(Some("nginx"))).unwrap();
        assert_eq!(spec.user, UserRef::Name("nginx".into()));

        let pod_sc = PodSecurityContext {
            run_as_user: Some(2000),
            run_as_group: Some(3000),
            fs_group: Some(4000),
            supplemental_groups: Some(vec![5000, 5001]),
            supplemental_groups_policy: Some("Strict".into()),
            ..Default::default()
        };
        let mut c = container(&[], &[]);
        c.security_context = Some(SecurityContext {
            run_as_user: Some(1001),
            ..Default::default()
        });
        let spec = user(&pod(Some(pod_sc)), &c, &with_user(Some("nginx"))).unwrap();
        assert_eq!(
            spec,
            UserSpec {
                user: UserRef::Id(1001),
                group: Some(3000),
                supplemental_groups: vec![4000, 5000, 5001],
                merge_group_file: false,
            }
        );
    }

    #[test]
    fn run_as_non_root_is_enforced_with_upstream_messages() {
        let non_root = |run_as_user: Option<i64>| {
            Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user,
                ..Default::default()
            })
        };
        let c = container(&[], &[]);
        let msg = |p: Pod, img: ImageConfig| user(&p, &c, &img).unwrap_err().to_string();
        assert_eq!(
            msg(pod(non_root(Some(0))), with_user(Some("1000"))),
            "container's runAsUser breaks non-root policy (pod: \"web-0_shop(u-1)\", container: app)"
        );
        assert_eq!(
            msg(pod(non_root(None)), with_user(None)),
            "container has runAsNonRoot and image will run as root (pod: \"web-0_shop(u-1)\", container: app)"
        );
        assert_eq!(
            msg(pod(non_root(None)), with_user(Some("nginx:nginx"))),
            "container has runAsNonRoot and image has non-numeric user (nginx), cannot verify user is non-root (pod: \"web-0_shop(u-1)\", container: app)"
        );
        assert!(user(&pod(non_root(None)), &c, &with_user(Some("65532"))).is_ok());
        assert!(user(&pod(non_root(Some(1000))), &c, &with_user(None)).is_ok());
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        \n\
        nginx:x:101:101:nginx user:/nonexistent:/bin/false\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,app\n\
        nginx:x:101:nginx\n\
        app:x:1000:app\n\
        audio:x:29:nginx,app\n";

    fn spec(user: UserRef, group: Option<u32>, supplemental: &[u32]) -> UserSpec {
        UserSpec {
            user,
            group,
            supplemental_groups: supplemental.to_vec(),
            merge_group_file: true,
        }
    }

    #[test]
    fn resolve_user_against_passwd_and_group() {
        let ids = |s: UserSpec| resolve_user(&s, Some(PASSWD), Some(GROUP)).unwrap();
        let u = |uid, gid, extra: &[u32]| UserIds {
            uid,
            gid,
            additional_gids: extra.to_vec(),
        };
        assert_eq!(ids(spec(UserRef::Id(0), None, &[])), u(0, 0, &[0, 10]));
        assert_eq!(
            ids(spec(UserRef::Id(1000), None, &[])),
            u(1000, 1000, &[10, 29, 1000])
        );
        assert_eq!(
            ids(spec(UserRef::Name("nginx".into()), None, &[])),
            u(101, 101, &[29, 101])
        );
        assert_eq!(
            ids(spec(UserRef::Id(4242), None, &[])),
            u(4242, 0, &[0]),
            "unknown uid: gid 0"
        );
        assert_eq!(
            ids(spec(UserRef::Id(1000), Some(3000), &[])),
            u(1000, 3000, &[10, 29, 3000])
        );
        assert_eq!(
            ids(spec(UserRef::Name("app".into()), Some(7), &[4000, 10])),
            u(1000, 7, &[7, 10, 29, 4000])
        );
        let strict = UserSpec {
            merge_group_file: false,
            ..spec(UserRef::Id(1000), None, &[4000])
        };
        assert_eq!(ids(strict), u(1000, 1000, &[1000, 4000]));
    }

    #[test]
    fn resolve_user_without_files() {
        let ids = resolve_user(&spec(UserRef::Id(65532), None, &[2000]), None, None).unwrap();
        assert_eq!(
            ids,
            UserIds {
                uid: 65532,
                gid: 0,
                additional_gids: vec![0, 2000],
            }
        );
        let err =
            resolve_user(&spec(UserRef::Name("nobody".into()), None, &[]), None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        let err = resolve_user(
            &spec(UserRef::Name("ghost".into()), None, &[]),
            Some(PASSWD),
            None,
        )
        .unwrap_err();
        assert_eq!(err, UserError::UnknownUser("ghost".into()));
    }

    #[test]
    fn passwd_parsing_is_as_tolerant_as_moby() {
        let users = parse_passwd("  bad:x:notanumber:7\nshort\n\nok:x:5:6:::\n");
        assert_eq!(
            users,
            [
                PasswdEntry {
                    name: "bad".into(),
                    uid: 0,
                    gid: 7
                },
                PasswdEntry {
                    name: "short".into(),
                    uid: 0,
                    gid: 0
                },
                PasswdEntry {
                    name: "ok".into(),
                    uid: 5,
                    gid: 6
                },
            ]
        );
        let groups = parse_group("g:x:9:\nh:x:8:a,b\n");
        assert_eq!(groups[0].members, Vec::<String>::new());
        assert_eq!(groups[1].members, ["a", "b"]);
    }
}
