/* Stand-in for QubesDB's qubesdb-read, -list and -multiread in a real-lab qube.
 *
 * Built by qgitconf.lab.real_roots (gcc, at the lab's install) and installed as
 * root-owned /usr/bin/qubesdb-read with qubesdb-list and qubesdb-multiread linked to
 * it; the program picks its command from its name, as upstream qubesdb-cmd does.  On
 * Qubes the values come from qubesdb-daemon, which only dom0 writes; here from
 * /run/qubesdb/db, a read-only bind of a root-owned file the harness writes: pairs
 * KEY NUL VALUE NUL, keys sorted.  It is C, as the real client is, so that what
 * the lab's timings pay for a QubesDB read is what a qube pays (about a millisecond,
 * not a Python start).
 *
 * Behaviour as upstream client/qubesdb-cmd.c: read prints each value and a newline
 * (bytes outside 0x20..0x7f as \xNN unless -r; -f prefixes "KEY = "), "Failed to read
 * KEY" and exit 1 for a missing key (--default=V: V instead); list PATH prints the keys
 * starting with PATH, PATH cut off unless -f; multiread PATH prints "KEY = VALUE" for
 * each of those keys; -q silences errors; no database is "Failed connect to local
 * daemon", exit 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB "/run/qubesdb/db"
#define MAX_DB (1 << 20)

static char db[MAX_DB + 1];
static size_t db_len;

static int load(void)
{
    FILE *f = fopen(DB, "rb");
    if (!f)
        return -1;
    db_len = fread(db, 1, MAX_DB + 1, f);
    int bad = ferror(f) || db_len > MAX_DB || (db_len && db[db_len - 1] != '\0');
    fclose(f);
    return bad ? -1 : 0;
}

/* The next KEY, VALUE pair at *at; 0 at the end. */
static int next(size_t *at, const char **key, const char **value)
{
    if (*at >= db_len)
        return 0;
    *key = db + *at;
    *at += strlen(*key) + 1;
    if (*at >= db_len)
        return 0; /* a key without a value: the end */
    *value = db + *at;
    *at += strlen(*value) + 1;
    return 1;
}

static const char *lookup(const char *want)
{
    size_t at = 0;
    const char *key, *value;
    while (next(&at, &key, &value))
        if (strcmp(key, want) == 0)
            return value;
    return NULL;
}

static void put(const char *value, int raw)
{
    for (const unsigned char *c = (const unsigned char *)value; *c; c++) {
        if (raw || (*c >= 0x20 && *c < 0x80))
            putchar(*c);
        else
            printf("\\x%02x", *c);
    }
}

int main(int argc, char **argv)
{
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    const char *dash = strchr(prog, '-');
    const char *cmd = dash ? dash + 1 : "";
    int fullpath = 0, raw = 0, quiet = 0, i = 1;
    const char *deflt = NULL;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strncmp(argv[i], "--default=", 10) == 0) {
            deflt = argv[i] + 10;
            continue;
        }
        for (const char *o = argv[i] + 1; *o; o++) {
            fullpath |= *o == 'f';
            raw |= *o == 'r';
            quiet |= *o == 'q';
        }
    }
    if (load() != 0) {
        if (!quiet)
            fprintf(stderr, "Failed connect to local daemon\n");
        return 1;
    }
    if (strcmp(cmd, "read") == 0) {
        int failed = 0;
        for (; i < argc; i++) {
            const char *value = lookup(argv[i]);
            if (!value)
                value = deflt;
            if (!value) {
                if (!quiet)
                    fprintf(stderr, "Failed to read %s\n", argv[i]);
                failed = 1;
                continue;
            }
            if (fullpath)
                printf("%s = ", argv[i]);
            put(value, raw);
            putchar('\n');
        }
        return failed;
    }
    if (strcmp(cmd, "list") == 0 || strcmp(cmd, "multiread") == 0) {
        int multi = cmd[0] == 'm';
        if (argc - i != 1) {
            fprintf(stderr, "%s command accept only one path\n", multi ? "MULTIREAD" : "LIST");
            return 1;
        }
        size_t at = 0, cut = fullpath ? 0 : strlen(argv[i]);
        const char *key, *value;
        while (next(&at, &key, &value)) {
            if (strncmp(key, argv[i], strlen(argv[i])) != 0)
                continue;
            fputs(key + cut, stdout);
            if (multi) {
                fputs(" = ", stdout);
                put(value, raw);
            }
            putchar('\n');
        }
        return 0;
    }
    fprintf(stderr, "Unknown command\n");
    return 1;
}
