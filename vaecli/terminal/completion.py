"""Static shell completion scripts (bash, zsh, fish) generated from the CLI's own definition.

Static scripts answer from the shell itself, without starting Python, so TAB stays instant.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from vaecli.data.datasets import SPLITS
from vaecli.store.bundled import BUNDLED_MODELS
from vaecli.store.files import check_output_folder, write_atomic

SHELLS = ("bash", "zsh", "fish")
FILE_NAMES = {"bash": "vae.bash", "zsh": "_vae", "fish": "vae.fish"}
# Parameters (by their Python name) whose values are paths of one kind, whatever their type says:
# "checkpoints" offers *.safetensors files and folders, "dirs" folders only.
PATH_KINDS = {"model": "checkpoints", "checkpoint": "checkpoints", "dataset": "dirs", "data_root": "dirs",
              "known": "dirs", "unusual": "dirs"}
# Words a scripted shell can only be told, since the CLI checks these values in code (config.py
# refuses channels other than 1 or 3) rather than declaring them as choices.
FIXED_CHANNELS = ("1", "3")
# --label takes a class's number or name, but which classes exist is in the checkpoint, which a static
# script cannot read: it offers the first ten numbers (every bundled and MNIST-family model's), never files.
LABEL_NUMBERS = tuple(str(number) for number in range(10))
ALL_LABELS_COMMANDS = ("sample",)  # where --label all (every class in turn) is accepted (common.chosen_class)
SAFE_WORD = re.compile(r"[A-Za-z0-9_.+-]+")  # needs no quoting in any shell, and no word breaks in bash


@dataclass
class Values:
    """What a value (of an option or a positional argument) may be: words, paths of a kind, or both."""

    hint: str  # a one-word name for the value, shown by zsh
    words: list[str] = field(default_factory=list)
    paths: str = ""  # "files", "dirs", "checkpoints" or "" (no path completion)


@dataclass
class OptionSpec:
    names: list[str]  # long names first
    help: str
    values: Values | None = None  # None for a flag
    repeatable: bool = False


@dataclass
class ArgumentSpec:
    values: Values
    many: bool  # takes any number of words


@dataclass
class CommandSpec:
    name: str
    help: str
    options: list[OptionSpec]
    arguments: list[ArgumentSpec]


def describe_cli(cli: Any) -> tuple[list[OptionSpec], list[CommandSpec]]:
    """Walk the CLI (the typer app or its click group): root options and every visible command.

    The CLI is passed in, not imported, so that the app can offer `vae completion` without a cycle."""
    group = typer.main.get_command(cli) if isinstance(cli, typer.Typer) else cli
    known = _known_words()
    root_ctx = group.make_context("vae", [], resilient_parsing=True)
    root = [_option(p, root_ctx, known) for p in group.params if _visible_option(p)]
    root.append(_help_option(root_ctx))
    commands = []
    for name in sorted(group.commands):
        command = group.commands[name]
        if command.hidden:
            continue
        _check_word(name, "command name")
        ctx = command.make_context(name, [], parent=root_ctx, resilient_parsing=True)
        options = [_option(p, ctx, known) for p in command.params if _visible_option(p)]
        options.append(_help_option(ctx))
        arguments = [ArgumentSpec(_values(p, ctx, known), p.nargs == -1) for p in command.params
                     if p.param_type_name == "argument"]
        commands.append(CommandSpec(name, _first_line(command.help or ""), options, arguments))
    return root, commands


def _known_words() -> dict[str, tuple[str, ...]]:
    """Values that plain str/int parameters accept, taken from the modules that check them."""
    return {"model": BUNDLED_MODELS, "checkpoint": BUNDLED_MODELS, "split": SPLITS, "channels": FIXED_CHANNELS}


def _visible_option(param) -> bool:
    return param.param_type_name == "option" and not param.hidden


def _help_option(ctx) -> OptionSpec:
    names = sorted(ctx.help_option_names, key=lambda n: (not n.startswith("--"), n))
    return OptionSpec(names, "Show the help and exit.")


def _option(param, ctx, known) -> OptionSpec:
    names = sorted([*param.opts, *param.secondary_opts], key=lambda n: (not n.startswith("--"), n))
    values = None if param.is_flag else _values(param, ctx, known)
    return OptionSpec(names, _first_line(param.help or ""), values, bool(param.multiple))


def _values(param, ctx, known) -> Values:
    """Words from the parameter's choices or completion function (or `known`), and the kind of paths."""
    hint = param.name.replace("_", "-")
    words = list(known.get(param.name, ())) or [item.value for item in param.shell_complete(ctx, "")]
    if param.name == "label":
        words = [*(["all"] if ctx.info_name in ALL_LABELS_COMMANDS else []), *LABEL_NUMBERS]
    for word in words:
        _check_word(word, param.name)
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if param.name in PATH_KINDS:
        paths = PATH_KINDS[param.name]
    elif words or (isinstance(annotation, type) and issubclass(annotation, (int, float, enum.Enum))):
        paths = ""  # numbers and closed lists are not paths
    else:
        paths = "dirs" if param.metavar == "DIR" else "files"
    return Values(hint, words, paths)


def _check_word(word: str, where: str) -> None:
    """Refuse to write a script that would break on a word (the scripts write words unquoted)."""
    if not SAFE_WORD.fullmatch(word):
        raise ValueError(f"{where}: {word!r} would need quoting in a completion script")


def _first_line(text: str) -> str:
    """The help's first sentence on one line, short enough for a completion menu."""
    text = " ".join(text.strip().split("\n\n")[0].split())
    sentence = re.match(r"(.+?[.!?])(\s|$)", text)
    if sentence and len(sentence.group(1)) <= 80:
        return sentence.group(1)
    return text if len(text) <= 80 else text[:77].rstrip() + "..."


# bash ---------------------------------------------------------------------------------------------
# Helpers shared by every command. Names come back one per line so that spaces stay inside a name;
# `compopt -o filenames` then has readline quote them, add / to folders and no space after a folder.
BASH_HELPERS = r"""# The word under the cursor as the shell reads it (my\ fi, 'my fi, "my fi -> my fi), without eval.
_vae_dequote() {
    local word=$1 quote="" char i
    REPLY=""
    for ((i = 0; i < ${#word}; i++)); do
        char=${word:i:1}
        if [[ $quote == "'" ]]; then
            [[ $char == "'" ]] && quote="" || REPLY+=$char
        elif [[ $char == '\' ]]; then
            ((++i))
            # Inside double quotes a backslash escapes only $ ` " and \; elsewhere it stays.
            [[ $quote == '"' && ${word:i:1} != [\$\`\"\\] ]] && REPLY+='\'
            REPLY+=${word:i:1}
        elif [[ $char == "$quote" || ( -z $quote && $char == [\"\'] ) ]]; then
            [[ -z $quote ]] && quote=$char || quote=""
        else
            REPLY+=$char
        fi
    done
}
_vae_words() {
    COMPREPLY+=($(compgen -W "$1" -- "$cur"))
}
_vae_paths() {
    local name
    compopt -o filenames 2>/dev/null
    while IFS= read -r name; do
        COMPREPLY+=("$name")
    done < <(case $1 in
        files) compgen -f -- "$cur" ;;
        dirs) compgen -d -- "$cur" ;;
        checkpoints) compgen -d -- "$cur"; compgen -f -X '!*.safetensors' -- "$cur" ;;
    esac)
}"""


def bash_script(root: list[OptionSpec], commands: list[CommandSpec]) -> str:
    lines = [
        "# bash completion for vae (generated by `vae completion bash`; do not edit)",
        BASH_HELPERS,
        "_vae() {",
        '    local cur prev cmd="" i REPLY',
        '    _vae_dequote "${COMP_WORDS[COMP_CWORD]}"; cur=$REPLY',
        "    prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    # --option=value: bash splits the word at '=', so the option is the word before it.",
        '    if [[ $cur == "=" ]]; then cur=""; elif [[ $prev == "=" ]]; then prev=${COMP_WORDS[COMP_CWORD-2]}; fi',
        "    COMPREPLY=()",
        "    # The command is the first word that is not an option (no root option takes a value).",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        [[ ${COMP_WORDS[i]} != -* ]] && { cmd=${COMP_WORDS[i]}; break; }',
        "    done",
        "    case $cmd in",
        f'        "") if [[ $cur == -* ]]; then _vae_words "{_flags(root)}"; '
        f'else _vae_words "{" ".join(c.name for c in commands)}"; fi ;;',
    ]
    for command in commands:
        lines.append(f"        {command.name})")
        by_action: dict[str, list[str]] = {}  # options that complete alike share one case branch
        for option in command.options:
            if option.values:
                by_action.setdefault(_bash_values(option.values), []).extend(option.names)
        if by_action:
            lines.append("            case $prev in")
            lines += [f"                {'|'.join(names)}) {action}return ;;" for action, names in by_action.items()]
            lines.append("            esac")
        if command.arguments:
            given = "".join(dict.fromkeys(_bash_values(a.values) for a in command.arguments)) or ":; "
            flags = _flags(command.options)
            lines.append(f'            if [[ $cur == -* ]]; then _vae_words "{flags}"; else {given}fi ;;')
        else:
            lines.append(f'            _vae_words "{_flags(command.options)}" ;;')
    lines += ["    esac", "}", "complete -F _vae vae", ""]
    return "\n".join(lines)


def _flags(options: list[OptionSpec]) -> str:
    return " ".join(name for option in options for name in option.names)


def _bash_values(values: Values) -> str:
    """Commands that add the values to COMPREPLY, each ending in "; "; none for a number or free text."""
    action = f'_vae_words "{" ".join(values.words)}"; ' if values.words else ""
    return action + (f"_vae_paths {values.paths}; " if values.paths else "")


# zsh ----------------------------------------------------------------------------------------------
ZSH_HELPERS = r"""# Names beside paths: $1 the kind of path (files, dirs, checkpoints), $2 what a name is, then names.
_vae_names_or_paths() {
    local kind=$1 hint=$2 paths=_files
    shift 2
    case $kind in
        dirs) paths='_files -/' ;;
        checkpoints) paths="_files -g '*.safetensors'" ;;
    esac
    _alternative "names:$hint:($*)" "paths:path:$paths"
}"""


def zsh_script(root: list[OptionSpec], commands: list[CommandSpec]) -> str:
    lines = [
        "#compdef vae",
        "# zsh completion for vae (generated by `vae completion zsh`; do not edit)",
        "",
        ZSH_HELPERS,
        "",
        "_vae() {",
        "    local curcontext=$curcontext state state_descr line ret=1",
        "    typeset -A opt_args",
        "    local -a commands=(",
        *[f"        {_sq(c.name + ':' + c.help)}" for c in commands],
        "    )",
        "    _arguments -s -S -C \\",
        *[f"        {_zsh_option(o)} \\" for o in root],
        "        '1: :->command' \\",
        "        '*:: :->args' && ret=0",
        "    case $state in",
        "        command) _describe -t commands 'vae command' commands && ret=0 ;;",
        "        args)",
        "            curcontext=${curcontext%:*:*}:vae-$line[1]:",
        "            case $line[1] in",
    ]
    for command in commands:
        specs = [_zsh_option(o) for o in command.options]
        for position, argument in enumerate(command.arguments, start=1):
            where = "*" if argument.many else str(position)
            specs.append(_sq(f"{where}:{argument.values.hint}:{_zsh_action(argument.values)}"))
        lines.append(f"                {command.name}) _arguments -s -S \\")
        lines += [f"                    {spec} \\" for spec in specs[:-1]]
        lines.append(f"                    {specs[-1]} && ret=0 ;;")
    lines += ["            esac ;;", "    esac", "    return ret", "}", "", '_vae "$@"', ""]
    return "\n".join(lines)


def _zsh_option(option: OptionSpec) -> str:
    """One _arguments spec, quoted for the shell: '(-o --out)'{-o,--out}'[help]:out:_files'."""
    # In the explanation a backslash quotes the brackets that would end it early.
    tail = "[" + re.sub(r"([\\\[\]])", r"\\\1", option.help) + "]"
    if option.values:
        tail += f":{option.values.hint}:{_zsh_action(option.values)}"
    if len(option.names) == 1:
        return _sq(("*" if option.repeatable else "") + option.names[0] + tail)
    exclusive = "*" if option.repeatable else f"({' '.join(option.names)})"
    return _sq(exclusive) + "{" + ",".join(option.names) + "}" + _sq(tail)


def _zsh_action(values: Values) -> str:
    if values.words and values.paths:
        # The leading space has _arguments call the helper with these words alone, adding no options.
        return f" _vae_names_or_paths {values.paths} {values.hint} {' '.join(values.words)}"
    if values.words:
        return f"({' '.join(values.words)})"
    return {"files": "_files", "dirs": "_files -/", "checkpoints": "_files -g '*.safetensors'", "": " "}[values.paths]


def _sq(text: str) -> str:
    """Single-quoted for sh-like shells: a quote inside becomes '\\''."""
    return "'" + text.replace("'", "'\\''") + "'"


# fish ---------------------------------------------------------------------------------------------
FISH_HELPERS = r"""# The command: the first word after vae that is not an option (no root option takes a value).
function __vae_command
    for word in (commandline -opc)[2..-1]
        if not string match -q -- '-*' $word
            echo $word
            return 0
        end
    end
    return 1
end
function __vae_using
    set -l command (__vae_command)
    test "$command" = "$argv[1]"
end
# Folders and *.safetensors files: fish's helper puts those first but lists every other file after them.
# The groups do not capture, or string match would print what they matched as lines of their own.
function __vae_checkpoints
    __fish_complete_suffix .safetensors | string match -r -- '^[^\t]*(?:/|\.safetensors)(?:\t.*)?$'
end"""


def fish_script(root: list[OptionSpec], commands: list[CommandSpec]) -> str:
    lines = [
        "# fish completion for vae (generated by `vae completion fish`; do not edit)",
        FISH_HELPERS,
        "# No file names unless an option or argument asks for them.",
        "complete -c vae -f",
    ]
    top = "complete -c vae -n 'not __vae_command'"
    lines += [f"{top} {_fish_option(o)}" for o in root]
    lines += [f"{top} -a {c.name} -d {_fish_quote(c.help)}" for c in commands]
    for command in commands:
        using = f"complete -c vae -n '__vae_using {command.name}'"
        lines += [f"{using} {_fish_option(o)}" for o in command.options]
        for values in dict.fromkeys(_fish_values(a.values, of_option=False) for a in command.arguments):
            lines.append(f"{using} {values}")
    return "\n".join(lines) + "\n"


def _fish_option(option: OptionSpec) -> str:
    parts = [f"-l {n[2:]}" if n.startswith("--") else (f"-s {n[1:]}" if len(n) == 2 else f"-o {n[1:]}")
             for n in option.names]
    if option.values:
        parts.append(_fish_values(option.values))
    parts.append(f"-d {_fish_quote(option.help)}")
    return " ".join(parts)


def _fish_values(values: Values, of_option: bool = True) -> str:
    """-F: any file may follow; -a: these candidates. An option's value is required (-r), and -x = -r -f."""
    candidates = list(values.words)
    if values.paths == "dirs":
        candidates.append("(__fish_complete_directories)")
    elif values.paths == "checkpoints":
        candidates.append("(__vae_checkpoints)")
    listed = f"-a '{' '.join(candidates)}'" if candidates else ""
    if values.paths == "files":
        flags = "-r -F" if of_option else "-F"
    else:
        flags = "-x" if of_option else ""  # the script's `complete -c vae -f` already keeps other files out
    return " ".join(part for part in (flags, listed) if part)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def script(shell: str, cli: Any) -> str:
    """The completion script for `shell` of the CLI (the typer app or its click group)."""
    root, commands = describe_cli(cli)
    return {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[shell](root, commands)


def write_all(folder: Path, cli: Any) -> list[Path]:
    """Write every shell's script for the CLI into folder; returns the paths."""
    check_output_folder(folder)  # write_atomic makes it with the first script
    return [write_atomic(folder / FILE_NAMES[shell], script(shell, cli).encode("utf-8"), own=True)
            for shell in SHELLS]
