/*
 * policy_fixture.h -- what the checker's unit tests share: a policy
 * engine from YAML text, and the pieces of the denier configuration
 * they vary (a denier handler "no", a checknothing instance "nothing",
 * and a rule "deny" sending one to the other on a match).
 *
 * Include after <cmocka.h>.
 */
#ifndef MIXD_TESTS_POLICY_FIXTURE_H
#define MIXD_TESTS_POLICY_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mixd/client.h>

#include "config/config.h"
#include "policy/pol_server.h"
#include "policy/policy.h"

/* The denier "no" with @params (a YAML flow mapping). */
#define YAML_DENIER(params)                                                  \
	"kind: handler\n"                                                    \
	"metadata: {name: no, namespace: istio-system}\n"                    \
	"spec: {compiledAdapter: denier, params: " params "}\n"               \
	"---\n"

#define YAML_NOTHING                                                         \
	"kind: instance\n"                                                   \
	"metadata: {name: nothing, namespace: istio-system}\n"               \
	"spec: {compiledTemplate: checknothing}\n"                           \
	"---\n"

/* The rule "deny": "nothing" to "no" when @match. */
#define YAML_DENY_WHEN(match)                                                \
	"kind: rule\n"                                                       \
	"metadata: {name: deny, namespace: istio-system}\n"                  \
	"spec:\n"                                                            \
	"  match: " match "\n"                                               \
	"  actions: [{handler: no, instances: [nothing]}]\n"

/* Deny request.path "/admin" with code 7, "go away". */
#define YAML_DENY_ADMIN                                                      \
	YAML_DENIER("{status: {code: 7, message: go away}}")                 \
	YAML_NOTHING YAML_DENY_WHEN("request.path == \"/admin\"")

/* A dictionary string value for a mixd_value array. */
#define STR(id, s)                                                           \
	{.attr = (id), .type = MIXD_T_STRING, .len = sizeof(s) - 1, .p = (s)}

/* The engine of @text, which must load and validate. */
static inline struct pol_engine *engine_of(const char *text)
{
	struct cfg *c = cfg_load_buffer("t.yaml", text, strlen(text), NULL);
	assert_non_null(c);
	pol_validate(c);
	assert_true(cfg_ok(c));
	struct pol_engine *e;
	assert_int_equal(pol_engine_create(c, NULL, &e), 0);
	cfg_destroy(c);
	return e;
}

/* A policy server on @address with the engine of @text; it must start. */
static inline struct pol_server *server_of(const char *address,
					   const char *text)
{
	struct pol_server *s;
	char err[256];
	int rc = pol_server_start(address, engine_of(text), 0, &s, err,
				  sizeof(err));
	if (rc)
		fprintf(stderr, "%s\n", err);
	assert_int_equal(rc, 0);
	return s;
}

/* Where a test's policy server listens: a directory of its own under
 * /tmp, and the socket in it, as a path and as an address. */
struct policy_sock {
	char dir[64], path[108], address[160];
};

/* Make @ps's directory, /tmp/@test.XXXXXX. */
static inline void policy_sock_make(struct policy_sock *ps, const char *test)
{
	snprintf(ps->dir, sizeof(ps->dir), "/tmp/%s.XXXXXX", test);
	assert_non_null(mkdtemp(ps->dir));
	snprintf(ps->path, sizeof(ps->path), "%s/policy.sock", ps->dir);
	snprintf(ps->address, sizeof(ps->address), "unix://%s", ps->path);
}

/* Remove @ps's socket (if a server left it) and directory. */
static inline void policy_sock_remove(const struct policy_sock *ps)
{
	unlink(ps->path);
	rmdir(ps->dir);
}

#endif /* MIXD_TESTS_POLICY_FIXTURE_H */
