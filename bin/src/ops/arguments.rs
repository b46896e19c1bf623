//! Parsing `starcite ops [--node URL] [--output text|json] <command> [args]` (ops.md §5). Options
//! may come before or after the command. Nothing here touches the network: a usage error is
//! reported without contacting the API.

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// `key=value` lines and short sentences.
    Text,
    /// The API's JSON body as it came.
    Json,
}

/// What `group-replicas` was given: only digits is a group id, anything else a session id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupTarget {
    /// The argument as typed (digits only).
    Group(String),
    /// A session id.
    Session(String),
}

/// One ops command with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpsCommand {
    /// `status`.
    Status,
    /// `ready-nodes`.
    ReadyNodes,
    /// `drain [node]`.
    Drain(Option<String>),
    /// `undrain [node]`.
    Undrain(Option<String>),
    /// `wait-drained [ms]`.
    WaitDrained {
        /// How long the node waits.
        timeout_ms: u64,
    },
    /// `wait-ready [ms]`.
    WaitReady {
        /// How long the node waits.
        timeout_ms: u64,
    },
    /// `group-replicas <session_id|group>`.
    GroupReplicas(GroupTarget),
}

/// A complete, valid invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `--node`, when given.
    pub node: Option<String>,
    /// `--output`.
    pub output: OutputFormat,
    /// The command.
    pub command: OpsCommand,
}

/// The outcome of parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Run this.
    Run(Invocation),
    /// `--help` / `-h`: print the usage text and succeed.
    Help,
}

/// A usage error (exit 2); the message says what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Default wait of `wait-ready` / `wait-drained` without an argument.
pub const WAIT_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// The seven commands, for the usage text and error messages.
pub const COMMANDS: [&str; 7] = [
    "status",
    "ready-nodes",
    "drain",
    "undrain",
    "wait-drained",
    "wait-ready",
    "group-replicas",
];

/// The usage text printed for `--help` and after a usage error.
pub const USAGE: &str = "\
usage: starcite ops [--node URL] [--output text|json] <command> [args]

commands:
  status                             this node's readiness, drain mark, groups, observer and archive
  ready-nodes                        write nodes that take traffic
  drain [node]                       mark a write node draining (default: this node)
  undrain [node]                     clear a write node's drain mark (default: this node)
  wait-drained [timeout_ms]          wait until this node is drained (default 30000)
  wait-ready [timeout_ms]            wait until this node is ready (default 30000)
  group-replicas <session_id|group>  replicas and leader of a group (digits only = group id)

options (also accepted after the command):
  --node URL           the node's ops API (default http://$STARCITE_OPS_ADDR, i.e. http://127.0.0.1:4001)
  --output text|json   key=value lines (default) or the API's JSON body

environment:
  STARCITE_OPS_TOKEN   sent as `Authorization: Bearer <token>` when set
";

/// Parse the arguments after `ops`.
pub fn parse(arguments: &[String]) -> Result<Parsed, UsageError> {
    let mut node = None;
    let mut output = OutputFormat::Text;
    let mut positionals: Vec<&str> = Vec::new();
    let mut rest = arguments.iter();
    let mut only_positionals = false;
    while let Some(argument) = rest.next() {
        let argument = argument.as_str();
        if only_positionals || (!argument.starts_with("--") && argument != "-h") {
            positionals.push(argument);
            continue;
        }
        let (name, inline_value) = match argument.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (argument, None),
        };
        let mut value = |option: &str| {
            inline_value
                .or_else(|| rest.next().map(String::as_str))
                .map(str::to_owned)
                .ok_or_else(|| UsageError(format!("{option} needs a value")))
        };
        match name {
            "--" if inline_value.is_none() => only_positionals = true,
            "-h" | "--help" if inline_value.is_none() => return Ok(Parsed::Help),
            "--node" => {
                let url = value("--node")?;
                if url.trim().is_empty() {
                    return Err(UsageError("--node needs a URL".into()));
                }
                node = Some(url);
            }
            "--output" => {
                output = match value("--output")?.as_str() {
                    "text" => OutputFormat::Text,
                    "json" => OutputFormat::Json,
                    other => {
                        return Err(UsageError(format!(
                            "invalid --output \"{other}\" (expected text|json)"
                        )))
                    }
                }
            }
            _ => return Err(UsageError(format!("unknown option {argument}"))),
        }
    }
    let Some((&name, arguments)) = positionals.split_first() else {
        return Err(UsageError("missing command".into()));
    };
    let command = parse_command(name, arguments)?;
    Ok(Parsed::Run(Invocation {
        node,
        output,
        command,
    }))
}

fn parse_command(name: &str, arguments: &[&str]) -> Result<OpsCommand, UsageError> {
    let at_most = |count: usize| {
        if arguments.len() > count {
            Err(UsageError(format!(
                "{name}: unexpected argument \"{}\"",
                arguments[count]
            )))
        } else {
            Ok(arguments.first().map(|argument| argument.to_string()))
        }
    };
    let command = match name {
        "status" => at_most(0).map(|_| OpsCommand::Status)?,
        "ready-nodes" => at_most(0).map(|_| OpsCommand::ReadyNodes)?,
        "drain" => OpsCommand::Drain(at_most(1)?),
        "undrain" => OpsCommand::Undrain(at_most(1)?),
        "wait-drained" => OpsCommand::WaitDrained {
            timeout_ms: wait_timeout(at_most(1)?)?,
        },
        "wait-ready" => OpsCommand::WaitReady {
            timeout_ms: wait_timeout(at_most(1)?)?,
        },
        "group-replicas" => {
            let target = at_most(1)?.ok_or_else(|| {
                UsageError("group-replicas: missing <session_id|group> argument".into())
            })?;
            let is_group = !target.is_empty() && target.bytes().all(|byte| byte.is_ascii_digit());
            OpsCommand::GroupReplicas(if is_group {
                GroupTarget::Group(target)
            } else {
                GroupTarget::Session(target)
            })
        }
        other => {
            return Err(UsageError(format!(
                "unknown command \"{other}\" (expected one of: {})",
                COMMANDS.join(", ")
            )))
        }
    };
    Ok(command)
}

/// `[ms]` of the wait commands: ASCII digits with a value ≥ 1.
fn wait_timeout(argument: Option<String>) -> Result<u64, UsageError> {
    let Some(text) = argument else {
        return Ok(WAIT_TIMEOUT_MS_DEFAULT);
    };
    let digits = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    digits
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .filter(|timeout_ms| *timeout_ms >= 1)
        .ok_or_else(|| {
            UsageError(format!(
                "invalid timeout \"{text}\" (expected positive integer ms)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &str) -> Result<Parsed, UsageError> {
        let arguments: Vec<String> = words.split_whitespace().map(str::to_owned).collect();
        parse(&arguments)
    }

    fn invocation(words: &str) -> Invocation {
        match parse_words(words) {
            Ok(Parsed::Run(invocation)) => invocation,
            other => panic!("{words}: {other:?}"),
        }
    }

    fn usage_error(words: &str) -> String {
        match parse_words(words) {
            Err(UsageError(message)) => message,
            other => panic!("{words}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn options_before_or_after_the_command() {
        let before = invocation("--node http://n:1 --output json wait-ready 60000");
        let after = invocation("wait-ready 60000 --node http://n:1 --output json");
        let mixed = invocation("--output=json wait-ready --node=http://n:1 60000");
        for parsed in [before, after, mixed] {
            assert_eq!(parsed.node.as_deref(), Some("http://n:1"));
            assert_eq!(parsed.output, OutputFormat::Json);
            assert_eq!(parsed.command, OpsCommand::WaitReady { timeout_ms: 60000 });
        }
        let plain = invocation("status");
        assert_eq!(plain.node, None);
        assert_eq!(plain.output, OutputFormat::Text);
        assert_eq!(plain.command, OpsCommand::Status);
    }

    #[test]
    fn every_command_and_its_arguments() {
        assert_eq!(invocation("ready-nodes").command, OpsCommand::ReadyNodes);
        assert_eq!(invocation("drain").command, OpsCommand::Drain(None));
        assert_eq!(
            invocation("drain node2@node2").command,
            OpsCommand::Drain(Some("node2@node2".into()))
        );
        assert_eq!(
            invocation("undrain n@h").command,
            OpsCommand::Undrain(Some("n@h".into()))
        );
        assert_eq!(
            invocation("wait-drained").command,
            OpsCommand::WaitDrained {
                timeout_ms: WAIT_TIMEOUT_MS_DEFAULT
            }
        );
        assert_eq!(
            invocation("group-replicas 42").command,
            OpsCommand::GroupReplicas(GroupTarget::Group("42".into()))
        );
        assert_eq!(
            invocation("group-replicas ses_42").command,
            OpsCommand::GroupReplicas(GroupTarget::Session("ses_42".into()))
        );
        assert_eq!(
            invocation("-- group-replicas --odd-session").command,
            OpsCommand::GroupReplicas(GroupTarget::Session("--odd-session".into()))
        );
    }

    #[test]
    fn usage_errors() {
        assert_eq!(usage_error(""), "missing command");
        assert_eq!(usage_error("--node http://n:1"), "missing command");
        assert_eq!(
            usage_error("frobnicate"),
            "unknown command \"frobnicate\" (expected one of: status, ready-nodes, drain, \
             undrain, wait-drained, wait-ready, group-replicas)"
        );
        assert_eq!(
            usage_error("status --output yaml"),
            "invalid --output \"yaml\" (expected text|json)"
        );
        assert_eq!(usage_error("status --node"), "--node needs a value");
        assert_eq!(usage_error("status --verbose"), "unknown option --verbose");
        assert_eq!(
            usage_error("status extra"),
            "status: unexpected argument \"extra\""
        );
        assert_eq!(
            usage_error("drain a@b c@d"),
            "drain: unexpected argument \"c@d\""
        );
        assert_eq!(
            usage_error("group-replicas"),
            "group-replicas: missing <session_id|group> argument"
        );
        for bad in ["0", "-5", "1.5", "abc", "99999999999999999999999", "+5"] {
            assert_eq!(
                usage_error(&format!("wait-ready {bad}")),
                format!("invalid timeout \"{bad}\" (expected positive integer ms)")
            );
            assert_eq!(
                usage_error(&format!("wait-drained {bad}")),
                format!("invalid timeout \"{bad}\" (expected positive integer ms)")
            );
        }
    }

    #[test]
    fn help() {
        assert_eq!(parse_words("--help"), Ok(Parsed::Help));
        assert_eq!(parse_words("status -h"), Ok(Parsed::Help));
        for command in COMMANDS {
            assert!(USAGE.contains(command), "{command}");
        }
    }
}
