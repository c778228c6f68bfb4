# bash completion for corral(1). Installed as /usr/share/bash-completion/completions/corral.
#
# It asks the installed corral itself: `corral [SUBCOMMAND...] --help` (CLI11's help) lists the
# subcommands and options of each level, so the completion never goes out of date with the CLI.
# Answers are cached per shell. Choices shown as TYPE:{a,b} in the help are completed; options
# that name a file or directory complete paths.

declare -gA _corral_help_cache=()

# _corral_help PROG PATH... : the --help text of that subcommand path (cached)
_corral_help() {
    local prog=$1; shift
    local key="$prog $*"
    if [[ -z ${_corral_help_cache[$key]+set} ]]; then
        _corral_help_cache[$key]=$("$prog" "$@" --help 2>/dev/null)
    fi
    printf '%s\n' "${_corral_help_cache[$key]}"
}

# subcommands listed in a help text
_corral_subcommands() {
    awk '/^Subcommands:/ {s = 1; next} /^[^ ]/ {s = 0} s && /^  [a-z]/ {print $1}'
}

# option names (-x, --long) listed in a help text
_corral_options() {
    awk '/^Options:/ {s = 1; next} /^[^ ]/ {s = 0}
         s && /^ +-/ { n = split($0, a, /  +/); split(a[2], o, /[ ,]/)
                       for (i in o) if (o[i] ~ /^-/) print o[i] }' | sort -u
}

# the type column of OPTION in a help text (e.g. FLOAT, TEXT:{none,host}); empty for a flag
_corral_option_type() {
    local opt=$1
    awk -v opt="$opt" '/^Options:/ {s = 1; next} /^[^ ]/ {s = 0}
        s && /^ +-/ { n = split($0, a, /  +/); m = split(a[2], w, / /)
                      split(w[1], names, /,/)
                      for (i in names) if (names[i] == opt) { print (m > 1 ? w[2] : ""); exit } }'
}

_corral() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=""
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    local prog=${COMP_WORDS[0]}
    local -a path=()
    local i w help subs
    # Walk the words typed so far: a word that is a subcommand of the current level descends.
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        [[ $w == -* ]] && continue
        subs=$(_corral_help "$prog" "${path[@]}" | _corral_subcommands)
        if grep -qxF -- "$w" <<<"$subs"; then path+=("$w"); fi
    done
    help=$(_corral_help "$prog" "${path[@]}")
    COMPREPLY=()

    # the value of an option
    if [[ $prev == -* && $cur != -* ]]; then
        local type
        type=$(_corral_option_type "$prev" <<<"$help")
        if [[ -n $type ]]; then
            if [[ $type == *'{'*'}'* ]]; then
                local choices=${type#*\{}
                choices=${choices%%\}*}
                mapfile -t COMPREPLY < <(compgen -W "${choices//,/ }" -- "$cur")
            else
                case $prev in
                    --policy-dir | --state-dir | --rootfs | --root | -w | --workdir)
                        mapfile -t COMPREPLY < <(compgen -d -- "$cur") ;;
                    --socket | --launcher | -v | --volume)
                        mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
                esac
            fi
            return 0
        fi
    fi
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_corral_options <<<"$help")" -- "$cur")
    else
        subs=$(_corral_subcommands <<<"$help")
        if [[ -n $subs ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$subs" -- "$cur")
        else
            # a subcommand with positional arguments (files, directories, image archives)
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        fi
    fi
    return 0
}
complete -F _corral corral
