/*
 * Stand-in for `cargo-tangle blueprint run`, the Blueprint Manager daemon.
 *
 * The real cargo-tangle cannot run in the test environment: it needs a chain
 * RPC endpoint, an ECDSA key and on-chain blueprint metadata. This program
 * launches instances the same way, so the live tests see the process tree,
 * environment, working directory and sockets that a real manager leaves on a
 * host. It is modelled on cargo-tangle 0.5.0-alpha.14 (blueprint SDK commit
 * 4c85bd163da0) in these points:
 *
 * - argv: `cargo-tangle [tangle] [top-level options] blueprint|bp run|r
 *   [options]`. The `blueprint run` options are accepted with `--name value`,
 *   `--name=value`, `-k value` and `-kvalue`; an unknown option exits with
 *   status 2, as clap does. `--data-dir` (default ./data),
 *   `--keystore-path` (default ./keystore), `--settings-file` (default
 *   ./settings.env), `--http-rpc-url` and `--ws-rpc-url` are used; the other
 *   options are parsed and ignored.
 * - The settings file is loaded into this process's own environment with
 *   dotenv semantics: a variable that is already set is not overridden. The
 *   file must exist and define BLUEPRINT_ID, TANGLE_CONTRACT,
 *   STAKING_CONTRACT and STATUS_REGISTRY_CONTRACT.
 * - When it starts service `svc-B-S` it creates `<runtime>/svc-B-S/` and
 *   `<cache>/svc-B-S/`, unlinks `<runtime>/svc-B-S/svc-B-S.sock`, then binds
 *   and listens on it before spawning the instance. The runtime dir is `$XDG_RUNTIME_DIR/blueprint-manager`
 *   or, when XDG_RUNTIME_DIR is unset, the relative path
 *   `./blueprint-manager/run`, so the socket is bound relative to the working
 *   directory, as the real manager does. The cache dir is
 *   `$XDG_CACHE_HOME` or `$HOME/.cache`, plus `/blueprint-manager`.
 * - Each instance is forked with stdin on /dev/null, stdout and stderr
 *   inherited, the working directory, process group and session inherited,
 *   and the whole environment inherited with the manager's variables set on
 *   top: HTTP_RPC_URL, WS_RPC_URL, KMS_URL, KEYSTORE_URI, DATA_DIR,
 *   BLUEPRINT_ID, SERVICE_ID, PROTOCOL, CHAIN, BOOTNODES, the three contract
 *   variables and BRIDGE_SOCKET_PATH. Its argv is `<binary> run --pretty -vv`.
 * - Services start one after another: the next instance is spawned once the
 *   previous one has pinged the bridge, or after the ping timeout (480 s), when
 *   the unresponsive instance is killed with SIGKILL.
 * - An instance that exits is reaped and logged, never respawned, and its
 *   bridge socket stays bound.
 * - SIGTERM keeps its default action: the process dies at once, runs no
 *   cleanup, and its instances survive as orphans. SIGINT sends SIGKILL to
 *   each running instance (tokio's kill_on_drop), then exits with status 0.
 *
 * Stand-in inputs, read from the environment after the settings file is
 * loaded, so they may also be set there:
 * - STANDIN_SERVICES, a comma-separated list of BLUEPRINT/SERVICE pairs such
 *   as `42/11,42/12`, replaces the chain scan for the operator's active
 *   services.
 * - STANDIN_INSTANCE_BINARY, the path of the instance binary, replaces the
 *   download of the binary named in the on-chain metadata.
 * - STANDIN_BLUEPRINT_NAME (default `quill`) replaces the on-chain metadata
 *   name used in DATA_DIR.
 * - STANDIN_PING_TIMEOUT_SECONDS (default 480) replaces the fixed ping timeout.
 *
 * Not modelled: the chain client and event loop, the auth proxy on port 8276
 * and the RocksDB data-dir lock (so two stand-ins do not exclude each other),
 * the keystore key check, VM and container runtimes, and the gRPC bridge
 * protocol. The bridge here is a line protocol: the instance sends "ping\n"
 * and the manager replies "pong\n".
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVICES 32
#define MAX_CONNECTIONS 64
#define DEFAULT_PING_TIMEOUT_SECONDS 480

enum service_state { WAITING, SPAWNED, CONNECTED, EXITED, FAILED };

struct service {
    unsigned long long blueprint_id;
    unsigned long long service_id;
    char label[64];
    char socket_path[PATH_MAX];
    int listener;
    pid_t pid;
    enum service_state state;
    time_t spawned_at;
};

struct connection {
    int fd;
    struct service *service;
};

struct options {
    const char *data_dir;
    const char *keystore_path;
    const char *settings_file;
    const char *http_rpc_url;
    const char *ws_rpc_url;
};

static struct service services[MAX_SERVICES];
static int service_count;
static struct connection connections[MAX_CONNECTIONS];
static int connection_count;

static volatile sig_atomic_t interrupted;
static volatile sig_atomic_t child_exited;

static void log_line(const char *format, ...) __attribute__((format(printf, 1, 2)));

static void log_line(const char *format, ...)
{
    char line[2 * PATH_MAX];
    int used = snprintf(line, sizeof line, "cargo-tangle[%d]: ", (int)getpid());
    va_list arguments;
    va_start(arguments, format);
    used += vsnprintf(line + used, sizeof line - (size_t)used - 1, format, arguments);
    va_end(arguments);
    if (used > (int)sizeof line - 2)
        used = (int)sizeof line - 2;
    line[used++] = '\n';
    /* One write per line, so lines from the manager and its instances do not interleave. */
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)used);
    (void)ignored;
}

static void fail(int status, const char *format, ...) __attribute__((format(printf, 2, 3), noreturn));

static void fail(int status, const char *format, ...)
{
    char message[2 * PATH_MAX];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(message, sizeof message, format, arguments);
    va_end(arguments);
    log_line("%s", message);
    exit(status);
}

static void on_interrupt(int signal_number)
{
    (void)signal_number;
    interrupted = 1;
}

static void on_child(int signal_number)
{
    (void)signal_number;
    child_exited = 1;
}

/* Create a directory and its parents, like `mkdir -p`. */
static void make_directories(const char *path)
{
    char buffer[PATH_MAX];
    if (snprintf(buffer, sizeof buffer, "%s", path) >= (int)sizeof buffer)
        fail(1, "Error: path too long: %s", path);
    for (char *cursor = buffer + 1; *cursor; cursor++) {
        if (*cursor != '/')
            continue;
        *cursor = '\0';
        if (mkdir(buffer, 0755) != 0 && errno != EEXIST)
            fail(1, "Error: failed to create directory %s: %s", buffer, strerror(errno));
        *cursor = '/';
    }
    if (mkdir(buffer, 0755) != 0 && errno != EEXIST)
        fail(1, "Error: failed to create directory %s: %s", buffer, strerror(errno));
}

static void join_path(char *out, size_t size, const char *left, const char *right)
{
    if (snprintf(out, size, "%s/%s", left, right) >= (int)size)
        fail(1, "Error: path too long: %s/%s", left, right);
}

static void absolute_path(char *out, size_t size, const char *path)
{
    if (path[0] == '/') {
        snprintf(out, size, "%s", path);
        return;
    }
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL)
        fail(1, "Error: failed to read the working directory: %s", strerror(errno));
    const char *relative = strncmp(path, "./", 2) == 0 ? path + 2 : path;
    join_path(out, size, cwd, relative);
}

static char *trim(char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    char *end = text + strlen(text);
    while (end > text && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
        *--end = '\0';
    return text;
}

/*
 * Load KEY=VALUE lines into the environment without overriding variables that
 * are already set, as dotenv 0.15 does. Supported: blank lines, `#` comments,
 * an `export ` prefix, single or double quotes around the value, and a ` #`
 * comment after an unquoted value. Not supported: variable substitution,
 * escapes and multi-line values.
 */
static void load_settings(const char *path)
{
    FILE *stream = fopen(path, "r");
    if (stream == NULL)
        fail(1, "Error: failed to load settings file %s: %s", path, strerror(errno));
    char line[4096];
    while (fgets(line, sizeof line, stream) != NULL) {
        char *text = trim(line);
        if (*text == '\0' || *text == '#')
            continue;
        if (strncmp(text, "export ", 7) == 0)
            text = trim(text + 7);
        char *equals = strchr(text, '=');
        if (equals == NULL)
            continue;
        *equals = '\0';
        char *name = trim(text);
        char *value = trim(equals + 1);
        if (*value == '"' || *value == '\'') {
            char *closing = strchr(value + 1, *value);
            if (closing != NULL)
                *closing = '\0';
            value++;
        } else {
            char *comment = strstr(value, " #");
            if (comment != NULL)
                *comment = '\0';
            value = trim(value);
        }
        if (*name != '\0')
            setenv(name, value, 0);
    }
    fclose(stream);
}

static void require_setting(const char *name)
{
    const char *value = getenv(name);
    if (value == NULL || *value == '\0')
        fail(1, "Error: Missing %s", name);
}

static bool parse_u64(const char *text, unsigned long long *out)
{
    if (text == NULL || *text == '\0')
        return false;
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || text[0] == '-')
        return false;
    *out = value;
    return true;
}

/* Parse STANDIN_SERVICES, `B/S[,B/S...]`, into the service table. */
static void parse_services(const char *list)
{
    char buffer[4096];
    snprintf(buffer, sizeof buffer, "%s", list ? list : "");
    char *saved = NULL;
    for (char *item = strtok_r(buffer, ",", &saved); item != NULL; item = strtok_r(NULL, ",", &saved)) {
        item = trim(item);
        if (*item == '\0')
            continue;
        char *slash = strchr(item, '/');
        if (slash == NULL)
            fail(1, "Error: invalid STANDIN_SERVICES entry '%s': expected BLUEPRINT/SERVICE", item);
        *slash = '\0';
        if (service_count == MAX_SERVICES)
            fail(1, "Error: STANDIN_SERVICES lists more than %d services", MAX_SERVICES);
        struct service *service = &services[service_count];
        if (!parse_u64(item, &service->blueprint_id) || !parse_u64(slash + 1, &service->service_id))
            fail(1, "Error: invalid STANDIN_SERVICES entry '%s/%s': expected numbers", item, slash + 1);
        snprintf(service->label, sizeof service->label, "svc-%llu-%llu", service->blueprint_id,
                 service->service_id);
        service->listener = -1;
        service->state = WAITING;
        service_count++;
    }
}

/* The url crate normalises `http://host:port` to `http://host:port/`. */
static void normalise_url(char *out, size_t size, const char *url)
{
    const char *authority = strstr(url, "://");
    bool needs_slash = authority != NULL && strchr(authority + 3, '/') == NULL;
    snprintf(out, size, "%s%s", url, needs_slash ? "/" : "");
}

static void bind_bridge(struct service *service, const char *runtime_root, const char *cache_root)
{
    char directory[PATH_MAX];
    join_path(directory, sizeof directory, runtime_root, service->label);
    make_directories(directory);
    char cache_directory[PATH_MAX];
    join_path(cache_directory, sizeof cache_directory, cache_root, service->label);
    make_directories(cache_directory);

    char socket_name[96];
    snprintf(socket_name, sizeof socket_name, "%s.sock", service->label);
    join_path(service->socket_path, sizeof service->socket_path, directory, socket_name);

    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(service->socket_path) >= sizeof address.sun_path)
        fail(1, "Error: bridge socket path too long for AF_UNIX: %s", service->socket_path);
    strcpy(address.sun_path, service->socket_path);

    unlink(service->socket_path);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listener < 0)
        fail(1, "Error: failed to create a Unix socket: %s", strerror(errno));
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0)
        fail(1, "Error: failed to bind bridge socket %s: %s", service->socket_path, strerror(errno));
    if (listen(listener, 16) != 0)
        fail(1, "Error: failed to listen on bridge socket %s: %s", service->socket_path, strerror(errno));
    service->listener = listener;
    log_line("Bridge for service `%s` listening on %s", service->label, service->socket_path);
}

static void spawn_instance(struct service *service, const char *binary, const struct options *options,
                           const char *data_dir, const char *blueprint_name)
{
    char http_url[1024], ws_url[1024], blueprint_text[32], service_text[32], instance_data_dir[PATH_MAX];
    normalise_url(http_url, sizeof http_url, options->http_rpc_url);
    normalise_url(ws_url, sizeof ws_url, options->ws_rpc_url);
    snprintf(blueprint_text, sizeof blueprint_text, "%llu", service->blueprint_id);
    snprintf(service_text, sizeof service_text, "%llu", service->service_id);
    if (snprintf(instance_data_dir, sizeof instance_data_dir, "%s/blueprint-%llu-%s", data_dir,
                 service->blueprint_id, blueprint_name) >= (int)sizeof instance_data_dir)
        fail(1, "Error: path too long: %s/blueprint-%llu-%s", data_dir, service->blueprint_id, blueprint_name);
    bool local = strstr(options->http_rpc_url, "127.0.0.1") || strstr(options->http_rpc_url, "localhost");

    log_line("Spawning native process: %s with args: [\"run\", \"--pretty\", \"-vv\"]", binary);
    pid_t pid = fork();
    if (pid < 0) {
        log_line("Failed to spawn %s: %s", service->label, strerror(errno));
        service->state = FAILED;
        return;
    }
    if (pid == 0) {
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0) {
            dup2(null_fd, STDIN_FILENO);
            close(null_fd);
        }
        signal(SIGINT, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        setenv("HTTP_RPC_URL", http_url, 1);
        setenv("WS_RPC_URL", ws_url, 1);
        setenv("KMS_URL", "https://kms.tangle.tools", 1);
        setenv("KEYSTORE_URI", options->keystore_path, 1);
        setenv("DATA_DIR", instance_data_dir, 1);
        setenv("BLUEPRINT_ID", blueprint_text, 1);
        setenv("SERVICE_ID", service_text, 1);
        setenv("PROTOCOL", "tangle", 1);
        setenv("CHAIN", local ? "local_testnet" : "testnet", 1);
        setenv("BOOTNODES", "", 1);
        setenv("TANGLE_CONTRACT", getenv("TANGLE_CONTRACT"), 1);
        setenv("STAKING_CONTRACT", getenv("STAKING_CONTRACT"), 1);
        setenv("STATUS_REGISTRY_CONTRACT", getenv("STATUS_REGISTRY_CONTRACT"), 1);
        setenv("BRIDGE_SOCKET_PATH", service->socket_path, 1);
        char *const arguments[] = {(char *)binary, "run", "--pretty", "-vv", NULL};
        execv(binary, arguments);
        dprintf(STDERR_FILENO, "cargo-tangle[%d]: failed to execute %s: %s\n", (int)getpid(), binary,
                strerror(errno));
        _exit(127);
    }
    service->pid = pid;
    service->state = SPAWNED;
    service->spawned_at = time(NULL);
}

static struct service *service_of_pid(pid_t pid)
{
    for (int i = 0; i < service_count; i++)
        if (services[i].pid == pid)
            return &services[i];
    return NULL;
}

static void reap_children(void)
{
    child_exited = 0;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        struct service *service = service_of_pid(pid);
        const char *label = service ? service->label : "unknown service";
        if (WIFSIGNALED(status))
            log_line("Process for %s exited: killed by signal %d", label, WTERMSIG(status));
        else
            log_line("Process for %s exited: status %d", label, WEXITSTATUS(status));
        if (service != NULL) {
            /* The real manager marks the service Finished and never restarts it. */
            service->state = service->state == FAILED ? FAILED : EXITED;
            service->pid = 0;
        }
    }
}

static void kill_instances_and_exit(void)
{
    for (int i = 0; i < service_count; i++) {
        if (services[i].pid > 0) {
            log_line("Shutting down %s: SIGKILL to pid %d", services[i].label, (int)services[i].pid);
            kill(services[i].pid, SIGKILL);
        }
    }
    log_line("Received SIGINT, shutting down");
    exit(0);
}

static void accept_connections(struct service *service)
{
    for (;;) {
        int fd = accept4(service->listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if (connection_count == MAX_CONNECTIONS) {
            log_line("Too many bridge connections; closing a new one for %s", service->label);
            close(fd);
            continue;
        }
        connections[connection_count++] = (struct connection){.fd = fd, .service = service};
    }
}

static void drop_connection(int index)
{
    close(connections[index].fd);
    connections[index] = connections[--connection_count];
}

static void read_connection(int index)
{
    struct connection *connection = &connections[index];
    char buffer[256];
    ssize_t count = read(connection->fd, buffer, sizeof buffer - 1);
    if (count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR)) {
        log_line("Bridge connection for %s closed", connection->service->label);
        drop_connection(index);
        return;
    }
    if (count < 0)
        return;
    buffer[count] = '\0';
    if (strstr(buffer, "ping") == NULL)
        return;
    ssize_t ignored = write(connection->fd, "pong\n", 5);
    (void)ignored;
    struct service *service = connection->service;
    if (service->state == SPAWNED) {
        service->state = CONNECTED;
        log_line("Service %s connected to the bridge", service->label);
    }
}

static int next_service_to_spawn(void)
{
    for (int i = 0; i < service_count; i++) {
        if (services[i].state == SPAWNED)
            return -1;
        if (services[i].state == WAITING)
            return i;
    }
    return -1;
}

static void check_ping_timeouts(long timeout_seconds)
{
    time_t now = time(NULL);
    for (int i = 0; i < service_count; i++) {
        struct service *service = &services[i];
        if (service->state != SPAWNED || now - service->spawned_at < timeout_seconds)
            continue;
        log_line("Service never connected to bridge (%s); killing pid %d", service->label, (int)service->pid);
        kill(service->pid, SIGKILL);
        service->state = FAILED;
        close(service->listener);
        service->listener = -1;
    }
}

static void print_help(void)
{
    puts("Usage: cargo-tangle blueprint run [OPTIONS]\n"
         "\n"
         "Stand-in for the Blueprint Manager daemon; see the comment at the top of cargo_tangle.c.\n"
         "\n"
         "Options:\n"
         "  -p, --protocol <PROTOCOL>          [default: tangle]\n"
         "      --http-rpc-url <URL>           [default: http://127.0.0.1:8545]\n"
         "      --ws-rpc-url <URL>             [default: ws://127.0.0.1:8546]\n"
         "  -k, --keystore-path <PATH>         [default: ./keystore]\n"
         "  -w, --network <NETWORK>            [default: local]\n"
         "  -d, --data-dir <PATH>              [default: ./data]\n"
         "  -n, --bootnodes <BOOTNODES>\n"
         "  -f, --settings-file <PATH>         [default: ./settings.env]\n"
         "      --allow-unchecked-attestations\n"
         "      --spawn-method <METHOD>        [default: vm]\n"
         "      --preferred-source <SOURCE>\n"
         "      --vm, --no-vm, --save-runtime-prefs\n"
         "  -h, --help");
}

struct option_spec {
    const char *long_name;
    char short_name;
    bool takes_value;
};

static const struct option_spec run_options[] = {
    {"--protocol", 'p', true},   {"--http-rpc-url", 0, true},     {"--ws-rpc-url", 0, true},
    {"--keystore-path", 'k', true}, {"--network", 'w', true},     {"--data-dir", 'd', true},
    {"--bootnodes", 'n', true},  {"--settings-file", 'f', true},  {"--spawn-method", 0, true},
    {"--preferred-source", 0, true}, {"--allow-unchecked-attestations", 0, false}, {"--vm", 0, false},
    {"--no-vm", 0, false},       {"--save-runtime-prefs", 0, false}, {"--help", 'h', false},
};

static void store_option(struct options *options, const char *long_name, const char *value)
{
    if (strcmp(long_name, "--data-dir") == 0)
        options->data_dir = value;
    else if (strcmp(long_name, "--keystore-path") == 0)
        options->keystore_path = value;
    else if (strcmp(long_name, "--settings-file") == 0)
        options->settings_file = value;
    else if (strcmp(long_name, "--http-rpc-url") == 0)
        options->http_rpc_url = value;
    else if (strcmp(long_name, "--ws-rpc-url") == 0)
        options->ws_rpc_url = value;
    else if (strcmp(long_name, "--help") == 0) {
        print_help();
        exit(0);
    }
}

static void usage_error(const char *word) __attribute__((noreturn));

static void usage_error(const char *word)
{
    dprintf(STDERR_FILENO, "error: unexpected argument '%s' found\n\nUsage: cargo-tangle blueprint run [OPTIONS]\n",
            word);
    exit(2);
}

/* Return the index of the first `blueprint run` option, or exit 2 like clap on a bad command line. */
static int skip_to_run_options(int argc, char **argv)
{
    int index = 1;
    if (index < argc && strcmp(argv[index], "tangle") == 0)
        index++;
    while (index < argc && argv[index][0] == '-') {
        const char *word = argv[index];
        if (strcmp(word, "--manifest-path") == 0 || strcmp(word, "--features") == 0 || strcmp(word, "-F") == 0)
            index += 2;
        else if (strcmp(word, "--all-features") == 0 || strcmp(word, "--no-default-features") == 0 ||
                 strncmp(word, "--manifest-path=", 16) == 0 || strncmp(word, "--features=", 11) == 0)
            index += 1;
        else
            usage_error(word);
    }
    bool blueprint = index < argc && (strcmp(argv[index], "blueprint") == 0 || strcmp(argv[index], "bp") == 0);
    const char *subcommand = blueprint && index + 1 < argc ? argv[index + 1] : "";
    bool run = strcmp(subcommand, "run") == 0 || strcmp(subcommand, "r") == 0;
    if (!run) {
        dprintf(STDERR_FILENO, "error: this stand-in implements only `cargo-tangle blueprint run`\n");
        exit(2);
    }
    return index + 2;
}

static void parse_options(int argc, char **argv, struct options *options)
{
    const size_t option_count = sizeof run_options / sizeof run_options[0];
    for (int index = skip_to_run_options(argc, argv); index < argc; index++) {
        const char *word = argv[index];
        const struct option_spec *spec = NULL;
        const char *inline_value = NULL;
        for (size_t i = 0; i < option_count && spec == NULL; i++) {
            size_t length = strlen(run_options[i].long_name);
            if (strncmp(word, run_options[i].long_name, length) == 0 && (word[length] == '\0' || word[length] == '=')) {
                spec = &run_options[i];
                inline_value = word[length] == '=' ? word + length + 1 : NULL;
            } else if (run_options[i].short_name && word[0] == '-' && word[1] == run_options[i].short_name) {
                spec = &run_options[i];
                inline_value = word[2] == '\0' ? NULL : (word[2] == '=' ? word + 3 : word + 2);
            }
        }
        if (spec == NULL)
            usage_error(word);
        if (!spec->takes_value) {
            if (inline_value != NULL)
                usage_error(word);
            store_option(options, spec->long_name, "");
            continue;
        }
        if (inline_value == NULL) {
            if (index + 1 >= argc) {
                dprintf(STDERR_FILENO, "error: a value is required for '%s' but none was supplied\n", word);
                exit(2);
            }
            inline_value = argv[++index];
        }
        store_option(options, spec->long_name, inline_value);
    }
}

static void install_signal_handlers(void)
{
    /* SIGTERM and SIGHUP keep their default action, as in cargo-tangle, which installs no handler for them. */
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction action = {0};
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    action.sa_handler = on_child;
    action.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &action, NULL);
}

struct layout {
    const char *binary;
    const char *blueprint_name;
    char data_dir[PATH_MAX];
    char cache_root[PATH_MAX];
    char runtime_root[PATH_MAX];
};

static void serve(const struct options *options, const struct layout *layout, long ping_timeout_seconds)
{
    for (;;) {
        if (interrupted)
            kill_instances_and_exit();
        if (child_exited)
            reap_children();
        check_ping_timeouts(ping_timeout_seconds);
        int next = next_service_to_spawn();
        if (next >= 0) {
            bind_bridge(&services[next], layout->runtime_root, layout->cache_root);
            spawn_instance(&services[next], layout->binary, options, layout->data_dir, layout->blueprint_name);
        }

        struct pollfd descriptors[MAX_SERVICES + MAX_CONNECTIONS];
        struct service *listener_of[MAX_SERVICES];
        int count = 0;
        for (int i = 0; i < service_count; i++) {
            if (services[i].listener < 0)
                continue;
            listener_of[count] = &services[i];
            descriptors[count++] = (struct pollfd){.fd = services[i].listener, .events = POLLIN};
        }
        int listener_count = count;
        for (int i = 0; i < connection_count; i++)
            descriptors[count++] = (struct pollfd){.fd = connections[i].fd, .events = POLLIN};

        /* A short timeout, because signals may arrive between the flag checks and poll(). */
        int ready = poll(descriptors, (nfds_t)count, 200);
        if (ready <= 0)
            continue;
        for (int i = 0; i < listener_count; i++)
            if (descriptors[i].revents & POLLIN)
                accept_connections(listener_of[i]);
        /* Walk backwards, because drop_connection moves the last entry into the freed slot. */
        for (int i = count - 1; i >= listener_count; i--)
            if (descriptors[i].revents & (POLLIN | POLLHUP | POLLERR))
                read_connection(i - listener_count);
    }
}

int main(int argc, char **argv)
{
    struct options options = {
        .data_dir = "./data",
        .keystore_path = "./keystore",
        .settings_file = "./settings.env",
        .http_rpc_url = "http://127.0.0.1:8545",
        .ws_rpc_url = "ws://127.0.0.1:8546",
    };
    parse_options(argc, argv, &options);
    install_signal_handlers();

    load_settings(options.settings_file);
    require_setting("BLUEPRINT_ID");
    unsigned long long settings_blueprint;
    if (!parse_u64(getenv("BLUEPRINT_ID"), &settings_blueprint))
        fail(1, "Error: invalid BLUEPRINT_ID '%s': expected an unsigned number", getenv("BLUEPRINT_ID"));
    require_setting("TANGLE_CONTRACT");
    require_setting("STAKING_CONTRACT");
    require_setting("STATUS_REGISTRY_CONTRACT");

    struct layout layout;
    layout.binary = getenv("STANDIN_INSTANCE_BINARY");
    if (layout.binary == NULL || *layout.binary == '\0')
        fail(1, "Error: STANDIN_INSTANCE_BINARY is not set: it names the instance binary to launch");
    layout.blueprint_name = getenv("STANDIN_BLUEPRINT_NAME");
    if (layout.blueprint_name == NULL || *layout.blueprint_name == '\0')
        layout.blueprint_name = "quill";
    long ping_timeout_seconds = DEFAULT_PING_TIMEOUT_SECONDS;
    unsigned long long timeout_value;
    if (parse_u64(getenv("STANDIN_PING_TIMEOUT_SECONDS"), &timeout_value))
        ping_timeout_seconds = (long)timeout_value;
    parse_services(getenv("STANDIN_SERVICES"));

    absolute_path(layout.data_dir, sizeof layout.data_dir, options.data_dir);
    make_directories(layout.data_dir);
    make_directories(options.keystore_path);

    const char *cache_base = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (cache_base != NULL && *cache_base != '\0')
        join_path(layout.cache_root, sizeof layout.cache_root, cache_base, "blueprint-manager");
    else if (home != NULL && *home != '\0')
        join_path(layout.cache_root, sizeof layout.cache_root, home, ".cache/blueprint-manager");
    else
        snprintf(layout.cache_root, sizeof layout.cache_root, "./blueprint-manager/cache");
    make_directories(layout.cache_root);

    const char *runtime_base = getenv("XDG_RUNTIME_DIR");
    if (runtime_base != NULL && *runtime_base != '\0')
        join_path(layout.runtime_root, sizeof layout.runtime_root, runtime_base, "blueprint-manager");
    else
        snprintf(layout.runtime_root, sizeof layout.runtime_root, "./blueprint-manager/run");
    make_directories(layout.runtime_root);

    log_line("Starting Blueprint-Manager{id=Blueprint-%llu} with %d service(s)", settings_blueprint, service_count);
    serve(&options, &layout, ping_timeout_seconds);
}
