// The page at /app/: sign in, then list, create, rename and delete my posts, all through the
// Connect endpoints the web process serves (grpc_ext.gateway.connect), with the TypeScript that
// protoc-gen-es generated from the protos (src/gen, by `python3 dev.py web`).
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthController } from "./gen/auth_pb";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb";
import { type Post, PostController } from "./gen/posts_pb";

const TOKEN_KEY = "grpcdemo.access";
const EMAIL_KEY = "grpcdemo.email";

// Every call but Login carries the access token, as gRPC clients send it.
const withToken: Interceptor = (next) => async (request) => {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

const transport = createConnectTransport({ baseUrl: window.location.origin, interceptors: [withToken] });
const auth = createClient(AuthController, transport);
const posts = createClient(PostController, transport);

function element<T extends HTMLElement>(selector: string, root: ParentNode = document): T {
  const found = root.querySelector<T>(selector);
  if (!found) throw new Error(`${selector} is missing from the page`);
  return found;
}

function notice(text: string): void {
  element("#notice").textContent = text;
}

/** Clear the field errors of a form (or a post's row). */
function clearErrors(root: ParentNode): void {
  for (const span of root.querySelectorAll<HTMLElement>(".error")) span.textContent = "";
}

/** Show an error: each field violation (google.rpc.BadRequest) next to its field, the rest as a notice. */
function showError(error: unknown, root: ParentNode): void {
  const connectError = ConnectError.from(error);
  let shown = false;
  for (const badRequest of connectError.findDetails(BadRequestSchema)) {
    for (const violation of badRequest.fieldViolations) {
      const span = root.querySelector<HTMLElement>(`.error[data-field="${CSS.escape(violation.field)}"]`);
      if (span) {
        span.textContent = span.textContent ? `${span.textContent} ${violation.description}` : violation.description;
        shown = true;
      }
    }
  }
  if (connectError.code === Code.Unauthenticated && sessionStorage.getItem(TOKEN_KEY)) {
    signOut();
    notice("Your session has ended; sign in again.");
    return;
  }
  if (!shown) notice(connectError.rawMessage);
}

/** Run an action of the page: clear the errors shown in `root`, then show there the one it fails with
 *  (an ABORTED one through `onAborted`, when given: a stale etag). */
async function act(root: ParentNode, action: () => Promise<void>, onAborted?: () => void): Promise<void> {
  clearErrors(root);
  notice("");
  try {
    await action();
  } catch (caught) {
    const connectError = ConnectError.from(caught);
    if (onAborted && connectError.code === Code.Aborted) {
      onAborted();
    } else {
      showError(connectError, root);
    }
  }
}

/** A request id for Create, so that a retried Create writes once (also outside secure contexts). */
function requestId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function renderPost(post: Post): HTMLLIElement {
  const item = document.createElement("li");
  item.dataset.id = post.id;
  item.dataset.etag = post.etag;
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = post.title;

  const form = document.createElement("form");
  form.className = "edit-form";
  const input = document.createElement("input");
  input.name = "title";
  input.value = post.title;
  input.setAttribute("aria-label", "New title");
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Rename";
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "delete";
  remove.textContent = "Delete";
  const error = document.createElement("span");
  error.className = "error";
  error.dataset.field = "title";
  const conflict = document.createElement("span");
  conflict.className = "error conflict";
  form.append(input, save, remove, error, conflict);
  item.append(title, form);

  const showConflict = (): void => {
    conflict.textContent = "Conflict: this post was changed elsewhere since it was loaded. Reload to see it.";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void act(
      item,
      async () => {
        // PartialUpdate with the etag the page read: a post changed since fails ABORTED, nothing is lost.
        const updated = await posts.partialUpdate({
          id: post.id,
          title: input.value,
          updateMask: { paths: ["title"] },
          etag: item.dataset.etag ?? "",
        });
        item.replaceWith(renderPost(updated));
      },
      showConflict,
    );
  });
  remove.addEventListener("click", () => {
    void act(
      item,
      async () => {
        await posts.destroy({ id: post.id, etag: item.dataset.etag ?? "" });
        item.remove();
      },
      showConflict,
    );
  });
  return item;
}

async function loadPosts(): Promise<void> {
  const list = element("#posts");
  const items: HTMLLIElement[] = [];
  let pageToken = "";
  do {
    const page = await posts.list({ owner: "me", pageSize: 100, pageToken });
    items.push(...page.posts.map(renderPost));
    pageToken = page.nextPageToken;
  } while (pageToken);
  list.replaceChildren(...items);
}

async function showWorkspace(): Promise<void> {
  element("#signin").hidden = true;
  element("#workspace").hidden = false;
  element("#whoami").textContent = sessionStorage.getItem(EMAIL_KEY) ?? "";
  try {
    await loadPosts();
  } catch (caught) {
    showError(caught, document);
  }
}

function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(EMAIL_KEY);
  element("#workspace").hidden = true;
  element("#signin").hidden = false;
  element("#posts").replaceChildren();
}

function start(): void {
  const signIn = element<HTMLFormElement>("#signin-form");
  signIn.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(signIn);
    const email = String(data.get("email") ?? "");
    void act(signIn, async () => {
      const tokens = await auth.login({ email, password: String(data.get("password") ?? "") });
      sessionStorage.setItem(TOKEN_KEY, tokens.access);
      sessionStorage.setItem(EMAIL_KEY, email);
      signIn.reset();
      await showWorkspace();
    });
  });

  const create = element<HTMLFormElement>("#create-form");
  create.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(create);
    const description = String(data.get("description") ?? "");
    void act(create, async () => {
      const post = await posts.create({
        title: String(data.get("title") ?? ""),
        description: description || undefined,
        requestId: requestId(),
      });
      element("#posts").prepend(renderPost(post));
      create.reset();
    });
  });

  element("#signout").addEventListener("click", signOut);
  if (sessionStorage.getItem(TOKEN_KEY)) void showWorkspace();
}

start();
