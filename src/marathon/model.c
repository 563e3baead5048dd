/*
 * model -- the resolver thread's picture of Marathon, kept as Marathon's
 * own JSON (the apps array of /v2/apps?embed=apps.tasks and the
 * /v2/pods/::status array), and the events that change it.
 *
 * Events are not ordered and do not carry everything a snapshot needs
 * (an instance_changed_event has no addresses, a deployment names no
 * tasks), so an event either updates the model in place (task status
 * updates, terminal instances, deletions), is already reflected (a pod
 * task's status update: see status_update()) or asks for a full resync.
 */
#include <string.h>

#include "marathon/mar_internal.h"

cJSON *mar_parse_apps(const char *body, size_t len)
{
	cJSON *doc = cJSON_ParseWithLength(body, len);
	if (!doc)
		return NULL;
	cJSON *apps = NULL;
	if (cJSON_IsObject(doc) &&
	    cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "apps")))
		apps = cJSON_DetachItemFromObjectCaseSensitive(doc, "apps");
	cJSON_Delete(doc);
	return apps;
}

cJSON *mar_parse_pods(const char *body, size_t len)
{
	cJSON *doc = cJSON_ParseWithLength(body, len);
	if (doc && !cJSON_IsArray(doc)) {
		cJSON_Delete(doc);
		return NULL;
	}
	return doc;
}

static const struct {
	const char *name;
	enum mar_event ev;
} event_names[] = {
	{"status_update_event", MAR_EV_STATUS_UPDATE},
	{"instance_changed_event", MAR_EV_INSTANCE_CHANGED},
	{"app_terminated_event", MAR_EV_APP_TERMINATED},
	{"pod_created_event", MAR_EV_POD_CREATED},
	{"pod_updated_event", MAR_EV_POD_UPDATED},
	{"pod_deleted_event", MAR_EV_POD_DELETED},
	{"deployment_success", MAR_EV_DEPLOYMENT_SUCCESS},
	{"deployment_failed", MAR_EV_DEPLOYMENT_FAILED},
	{"deployment_info", MAR_EV_DEPLOYMENT_INFO},
	{"deployment_step_success", MAR_EV_DEPLOYMENT_STEP},
	{"api_post_event", MAR_EV_API_POST},
	{"group_change_success", MAR_EV_GROUP_CHANGE},
	{"event_stream_attached", MAR_EV_STREAM_ATTACHED},
};

enum mar_event mar_event_from_name(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof event_names / sizeof *event_names; i++)
		if (strlen(event_names[i].name) == len &&
		    !memcmp(event_names[i].name, name, len))
			return event_names[i].ev;
	return MAR_EV_OTHER;
}

const char *mar_event_name(enum mar_event e)
{
	for (size_t i = 0; i < sizeof event_names / sizeof *event_names; i++)
		if (event_names[i].ev == e)
			return event_names[i].name;
	return e == MAR_EV_MALFORMED ? "malformed" : "other";
}

void mar_model_clear(struct mar_model *m)
{
	cJSON_Delete(m->apps);
	cJSON_Delete(m->pods);
	m->apps = m->pods = NULL;
}

static cJSON *find_by_id(cJSON *arr, const char *id)
{
	cJSON *e;
	cJSON_ArrayForEach(e, arr)
	{
		const char *s = mar_jstr(e, "id");
		if (s && !strcmp(s, id))
			return e;
	}
	return NULL;
}

static bool remove_by_id(cJSON *arr, const char *id)
{
	cJSON *e = find_by_id(arr, id);
	if (!e)
		return false;
	cJSON_Delete(cJSON_DetachItemViaPointer(arr, e));
	return true;
}

/*
 * Is @app a later one than the app whose end an event stamped @when
 * reports: created again under its id since? Its version (the time of
 * its last change) is later than the event. An event held while a sync
 * was in flight is applied to the sync's answer, which may already hold
 * the app deleted and created again (resolver.c, release_held()); the
 * new one must stay. Both are Marathon's own times (RFC 3339); either
 * unreadable: not later.
 */
static bool created_after(const cJSON *app, const char *when)
{
	const char *ver = mar_jstr(app, "version");
	int64_t v, w;
	return ver && when && !attr_parse_timestamp(ver, strlen(ver), &v) &&
	       !attr_parse_timestamp(when, strlen(when), &w) && v > w;
}

/* Marathon's instance Condition values after which it never serves. */
static const char *const terminal_condition[] = {
	"Finished", "Failed", "Killed", "Error", "Gone", "Dropped",
	"GoneByOperator", "Unknown", NULL};

/* Replace or add @key of @o with a copy of @v (if @v is present); of an
 * array, its first @max items. */
static void set_copy(cJSON *o, const char *key, const cJSON *v, int max)
{
	if (!v)
		return;
	cJSON *c;
	if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > max) {
		c = cJSON_CreateArray();
		const cJSON *it = v->child;
		for (int i = 0; c && it && i < max; i++, it = it->next) {
			cJSON *d = cJSON_Duplicate(it, true);
			if (!d || !cJSON_AddItemToArray(c, d)) {
				cJSON_Delete(d);
				cJSON_Delete(c);
				c = NULL;
			}
		}
	} else {
		c = cJSON_Duplicate(v, true);
	}
	if (!c)
		return;
	if (cJSON_GetObjectItemCaseSensitive(o, key))
		cJSON_ReplaceItemInObjectCaseSensitive(o, key, c);
	else
		cJSON_AddItemToObject(o, key, c);
}

static enum mar_event status_update(struct mar_model *m, const cJSON *d)
{
	const char *tid = mar_jstr(d, "taskId"), *aid = mar_jstr(d, "appId");
	const char *st = mar_jstr(d, "taskStatus");
	if (!tid || !aid || !st)
		return MAR_EV_MALFORMED;
	cJSON *app = find_by_id(m->apps, aid);
	if (!app && find_by_id(m->pods, aid)) {
		/* A pod's task (its appId is the pod id). The snapshot reads
		 * no task state of a pod, only its instances' status,
		 * addresses and endpoints, which only /v2/pods/::status has;
		 * Marathon sends an instance_changed_event whenever an
		 * instance's condition changes, which instance_changed()
		 * applies or resyncs for. But a new instance's first one
		 * comes while it is staging, before a container network has
		 * given it an address, and the instance is known after that
		 * sync, so nothing else would fetch its address: a task
		 * running is the moment to. Other updates change nothing (a
		 * resync for each would cost a full sync per update). */
		if (strcmp(st, "TASK_RUNNING") == 0)
			m->need_resync = true;
		return MAR_EV_STATUS_UPDATE;
	}
	if (!app) {
		/* A task of a run spec we do not know: only a sync can tell
		 * what it is. */
		if (!mar_task_terminal(st))
			m->need_resync = true;
		return MAR_EV_STATUS_UPDATE;
	}
	cJSON *tasks = cJSON_GetObjectItemCaseSensitive(app, "tasks");
	if (!cJSON_IsArray(tasks)) {
		tasks = cJSON_CreateArray();
		if (!tasks) {
			m->need_resync = true;
			return MAR_EV_STATUS_UPDATE;
		}
		if (cJSON_GetObjectItemCaseSensitive(app, "tasks"))
			cJSON_ReplaceItemInObjectCaseSensitive(app, "tasks",
							       tasks);
		else
			cJSON_AddItemToObject(app, "tasks", tasks);
	}
	if (mar_task_terminal(st)) {
		if (remove_by_id(tasks, tid))
			m->dirty = true;
		return MAR_EV_STATUS_UPDATE;
	}
	cJSON *t = find_by_id(tasks, tid);
	if (!t && m->event_tasks >= MAR_EVENT_TASKS_MAX) {
		m->need_resync = true; /* the sync brings it */
		return MAR_EV_STATUS_UPDATE;
	}
	if (!t) {
		m->event_tasks++;
		t = cJSON_CreateObject();
		if (!t || !cJSON_AddStringToObject(t, "id", tid) ||
		    !cJSON_AddStringToObject(t, "appId", aid)) {
			cJSON_Delete(t);
			m->need_resync = true;
			return MAR_EV_STATUS_UPDATE;
		}
		cJSON_AddItemToArray(tasks, t);
	}
	cJSON *stv = cJSON_CreateString(st);
	if (stv)
		set_copy(t, "state", stv, 0);
	cJSON_Delete(stv);
	set_copy(t, "host", cJSON_GetObjectItemCaseSensitive(d, "host"), 0);
	set_copy(t, "ports", cJSON_GetObjectItemCaseSensitive(d, "ports"),
		 MAR_EVENT_PORTS_MAX);
	set_copy(t, "ipAddresses",
		 cJSON_GetObjectItemCaseSensitive(d, "ipAddresses"),
		 MAR_EVENT_ADDRS_MAX);
	set_copy(t, "version", cJSON_GetObjectItemCaseSensitive(d, "version"),
		 0);
	m->dirty = true;
	return MAR_EV_STATUS_UPDATE;
}

/* Remove app tasks belonging to instance @iid ("<iid>.<container>..."). */
static bool remove_instance_tasks(cJSON *app, const char *iid)
{
	size_t il = strlen(iid);
	bool any = false;
	cJSON *tasks = cJSON_GetObjectItemCaseSensitive(app, "tasks");
	cJSON *t = tasks ? tasks->child : NULL;
	while (t) {
		cJSON *next = t->next;
		const char *id = mar_jstr(t, "id");
		if (id && !strncmp(id, iid, il) &&
		    (id[il] == 0 || id[il] == '.')) {
			cJSON_Delete(cJSON_DetachItemViaPointer(tasks, t));
			any = true;
		}
		t = next;
	}
	return any;
}

static enum mar_event instance_changed(struct mar_model *m, const cJSON *d)
{
	const char *iid = mar_jstr(d, "instanceId"), *rs = mar_jstr(d, "runSpecId");
	const char *cond = mar_jstr(d, "condition");
	if (!iid || !rs || !cond)
		return MAR_EV_MALFORMED;
	cJSON *pod = find_by_id(m->pods, rs);
	cJSON *app = find_by_id(m->apps, rs);
	if (mar_in_list(terminal_condition, cond)) {
		if (pod && remove_by_id(cJSON_GetObjectItemCaseSensitive(
						pod, "instances"),
					iid))
			m->dirty = true;
		if (app && remove_instance_tasks(app, iid))
			m->dirty = true;
		return MAR_EV_INSTANCE_CHANGED;
	}
	if (app)
		return MAR_EV_INSTANCE_CHANGED; /* status_update_event has it */
	cJSON *in = pod ? find_by_id(cJSON_GetObjectItemCaseSensitive(
					     pod, "instances"),
				     iid)
			: NULL;
	if (!in) {
		/* A new instance: its addresses come only from a sync. */
		m->need_resync = true;
	}
	return MAR_EV_INSTANCE_CHANGED;
}

/* Pod events carry the pod's URI (/v2/pods/<id>) rather than its id. */
static const char *pod_id_of(const cJSON *d)
{
	const char *id = mar_jstr(d, "podId");
	if (!id)
		id = mar_jstr(d, "id");
	const char *uri = mar_jstr(d, "uri");
	if (!id && uri && !strncmp(uri, "/v2/pods", 8))
		id = uri + 8;
	return id;
}

/* Does an event of type @ev only say that run specs changed (labels,
 * networks, groups), so that the model is invalidated whatever it says? */
static bool invalidates(enum mar_event ev)
{
	switch (ev) {
	case MAR_EV_POD_CREATED:
	case MAR_EV_POD_UPDATED:
	case MAR_EV_DEPLOYMENT_SUCCESS:
	case MAR_EV_DEPLOYMENT_FAILED:
	case MAR_EV_DEPLOYMENT_INFO:
	case MAR_EV_DEPLOYMENT_STEP:
	case MAR_EV_API_POST:
	case MAR_EV_GROUP_CHANGE:
		return true;
	default:
		return false;
	}
}

bool mar_event_data_unread(const char *name, size_t len)
{
	enum mar_event ev = mar_event_from_name(name, len);
	return len && (ev == MAR_EV_OTHER || invalidates(ev));
}

enum mar_event mar_model_apply(struct mar_model *m, const char *type,
			       size_t type_len, const char *data, size_t len)
{
	enum mar_event ev = mar_event_from_name(type, type_len);
	/* Typed by its "event:" line and not read: deployments and API posts
	 * carry whole app and group definitions (megabytes in a large
	 * cluster), and what they say is only "resync". (The SSE framer
	 * has dropped their data already.) */
	if (mar_event_data_unread(type, type_len)) {
		if (ev != MAR_EV_OTHER)
			m->need_resync = true;
		return ev;
	}
	cJSON *d = cJSON_ParseWithLength(data, len);
	if (!cJSON_IsObject(d)) {
		cJSON_Delete(d);
		return MAR_EV_MALFORMED;
	}
	if (type_len == 0) { /* no "event:" line: use the payload's */
		const char *et = mar_jstr(d, "eventType");
		type = et ? et : "";
		type_len = strlen(type);
	}
	ev = mar_event_from_name(type, type_len);
	switch (ev) {
	case MAR_EV_STATUS_UPDATE:
		ev = status_update(m, d);
		break;
	case MAR_EV_INSTANCE_CHANGED:
		ev = instance_changed(m, d);
		break;
	case MAR_EV_APP_TERMINATED: {
		const char *aid = mar_jstr(d, "appId");
		cJSON *app = aid ? find_by_id(m->apps, aid) : NULL;
		if (!aid) {
			ev = MAR_EV_MALFORMED;
		} else if (app && !created_after(app, mar_jstr(d, "timestamp"))) {
			cJSON_Delete(cJSON_DetachItemViaPointer(m->apps, app));
			m->dirty = true;
		}
		break;
	}
	case MAR_EV_POD_DELETED: {
		const char *pid = pod_id_of(d);
		if (pid && remove_by_id(m->pods, pid))
			m->dirty = true;
		else
			m->need_resync = true;
		break;
	}
	default:
		/* Run specs changed: labels, networks, groups. Invalidate. */
		if (invalidates(ev))
			m->need_resync = true;
		break;
	}
	cJSON_Delete(d);
	return ev;
}
