/*
 * Stand-in for a blueprint instance binary (`<blueprint-binary> run`).
 *
 * A real blueprint binary cannot run in the test environment: its runner
 * needs a chain RPC endpoint and a keystore. This program behaves like one
 * from the outside, modelled on the blueprint SDK runner that cargo-tangle
 * 0.5.0-alpha.14 launches:
 *
 * - argv must start with the subcommand `run`, or it exits with status 2.
 *   `-t`/`--test-mode` turns test mode on. `--pretty`, `-v...`, `--dry-run`
 *   and any other option are accepted and ignored. They stand in for the
 *   runner's logging flags and a blueprint's own options.
 * - BLUEPRINT_ID and SERVICE_ID come from the environment and must be
 *   unsigned numbers, or it exits with status 1.
 * - Test mode is on with `--test-mode`, or with TEST_MODE set to a value
 *   other than "", 0, n, no, f, false or off in any case, as clap reads it.
 *   Unless test mode is on, it connects to the Unix socket in
 *   BRIDGE_SOCKET_PATH and pings the manager.
 *   A relative path resolves against the working directory, which the
 *   manager's instances share with it. When that fails it prints "Unable to
 *   establish bridge connection" and exits with status 1.
 * - It then keeps the bridge connection open and sleeps until a signal ends
 *   it. No signal is handled, so SIGTERM, SIGINT and SIGHUP end it at once.
 *
 * The bridge here is a line protocol, not the SDK's gRPC: the instance sends
 * "ping\n" and expects "pong\n". Once running, it prints one line
 * `<name>[PID]: ready pid=PID ppid=PPID blueprint=B service=S bridge=STATE`
 * to stderr, with STATE `connected` or `skipped`, so tests can wait for it.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char *program_name = "instance";

static void fail(int status, const char *message, const char *detail) __attribute__((noreturn));

static void fail(int status, const char *message, const char *detail)
{
    dprintf(STDERR_FILENO, "%s[%d]: %s%s%s\n", program_name, (int)getpid(), message, detail ? ": " : "",
            detail ? detail : "");
    exit(status);
}

/* Read a switch as clap's FalseyValueParser does: the values below, in any case, are false, and all others true. */
static bool is_truthy(const char *value)
{
    static const char *const falsey[] = {"", "0", "n", "no", "f", "false", "off"};
    if (value == NULL)
        return false;
    for (size_t i = 0; i < sizeof falsey / sizeof falsey[0]; i++)
        if (strcasecmp(value, falsey[i]) == 0)
            return false;
    return true;
}

static bool is_unsigned_number(const char *text)
{
    if (text == NULL || *text == '\0' || strlen(text) > 20)
        return false;
    for (const char *cursor = text; *cursor; cursor++)
        if (*cursor < '0' || *cursor > '9')
            return false;
    return true;
}

/* Connect to the manager's bridge, exchange one ping, and return the connected socket. */
static int connect_bridge(void)
{
    const char *path = getenv("BRIDGE_SOCKET_PATH");
    if (path == NULL || *path == '\0')
        fail(1, "Unable to establish bridge connection", "BRIDGE_SOCKET_PATH is not set");
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path)
        fail(1, "Unable to establish bridge connection", "BRIDGE_SOCKET_PATH is too long for AF_UNIX");
    strcpy(address.sun_path, path);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0)
        fail(1, "Unable to establish bridge connection", strerror(errno));
    if (write(fd, "ping\n", 5) != 5)
        fail(1, "Unable to establish bridge connection", "ping not sent");
    char reply[16] = {0};
    ssize_t count = read(fd, reply, sizeof reply - 1);
    if (count <= 0 || strncmp(reply, "pong", 4) != 0)
        fail(1, "Unable to establish bridge connection", "no pong from the manager");
    return fd;
}

int main(int argc, char **argv)
{
    const char *slash = strrchr(argv[0], '/');
    program_name = slash ? slash + 1 : argv[0];

    if (argc < 2 || strcmp(argv[1], "run") != 0)
        fail(2, "error: expected the subcommand 'run'", NULL);
    bool test_mode = is_truthy(getenv("TEST_MODE"));
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--test-mode") == 0 || strcmp(argv[i], "-t") == 0)
            test_mode = true;

    const char *blueprint_id = getenv("BLUEPRINT_ID");
    const char *service_id = getenv("SERVICE_ID");
    if (!is_unsigned_number(blueprint_id))
        fail(1, "Missing or invalid BLUEPRINT_ID", blueprint_id);
    if (!is_unsigned_number(service_id))
        fail(1, "Missing or invalid SERVICE_ID", service_id);

    int bridge = test_mode ? -1 : connect_bridge();
    dprintf(STDERR_FILENO, "%s[%d]: ready pid=%d ppid=%d blueprint=%s service=%s bridge=%s\n", program_name,
            (int)getpid(), (int)getpid(), (int)getppid(), blueprint_id, service_id,
            bridge >= 0 ? "connected" : "skipped");

    for (;;)
        pause();
}
