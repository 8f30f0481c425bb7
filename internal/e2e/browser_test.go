package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// videoPage records a second of a canvas as WebM (MediaRecorder), PUTs it
// into the channel across origins with the channel token (CORS preflight),
// has it signed, and plays the signed link in a <video>, which sends no
// Authorization header and asks for ranges. It reports to /result.
const videoPage = `<!doctype html><html><body><video id="v" muted playsinline></video><script>
const node = %q, token = %q, files = %t;
const report = m => fetch("/result?m=" + encodeURIComponent(m));
(async () => {
  try {
    const c = document.createElement("canvas"); c.width = 64; c.height = 48;
    const g = c.getContext("2d");
    const rec = new MediaRecorder(c.captureStream(25), {mimeType: "video/webm;codecs=vp8"});
    const chunks = [];
    rec.ondataavailable = e => chunks.push(e.data);
    const stopped = new Promise(r => rec.onstop = r);
    let f = 0;
    const iv = setInterval(() => { g.fillStyle = "hsl(" + (f++ * 20) + ",80%%,50%%)"; g.fillRect(0, 0, 64, 48); }, 40);
    rec.start(100);
    await new Promise(r => setTimeout(r, 1200));
    rec.stop(); await stopped; clearInterval(iv);
    const auth = {Authorization: "Bearer " + token};
    const where = files ? "/files/" : "/kv/";
    let r = await fetch(node + "/v1/channels/media" + where + "clips/a.webm", {method: "PUT",
      headers: files ? {...auth, "Content-Type": "video/webm"} : auth, body: new Blob(chunks, {type: "video/webm"})});
    if (!r.ok) throw new Error("put: HTTP " + r.status);
    r = await fetch(node + "/v1/channels/media/sign", {method: "POST", headers: {...auth, "Content-Type": "application/json"},
      body: JSON.stringify(files ? {file: "clips/a.webm", ttl: "5m"} : {key: "clips/a.webm", ttl: "5m"})});
    if (!r.ok) throw new Error("sign: HTTP " + r.status);
    const link = (await r.json()).url;
    const v = document.getElementById("v");
    const played = new Promise((res, rej) => {
      v.ontimeupdate = () => { if (v.currentTime > 0.2) res(); };
      v.onerror = () => rej(new Error("media error " + (v.error && v.error.code)));
    });
    v.src = node + link;
    await v.play();
    await played;
    if (files) {
      // Seek back, then forward: each seek reads from a new offset.
      for (const to of [0.05, 0.6]) {
        const seeked = new Promise((res, rej) => { v.onseeked = res; setTimeout(() => rej(new Error("no seeked event")), 10000); });
        v.currentTime = to;
        await seeked;
      }
    }
    report("ok " + v.currentTime.toFixed(2));
  } catch (e) { report("error " + e); }
})();
</script></body></html>`

// TestBrowserPlaysSignedVideo plays a video from a signed link in headless
// Chromium; skipped when no chromium is installed.
func TestBrowserPlaysSignedVideo(t *testing.T) { browserPlaysVideo(t, false) }

// TestBrowserPlaysAndSeeksFile does the same with the video uploaded as a
// channel's file (PUT .../files/, signed with {"file": ...}), and seeks in
// it.
func TestBrowserPlaysAndSeeksFile(t *testing.T) { browserPlaysVideo(t, true) }

func browserPlaysVideo(t *testing.T, files bool) {
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" || testing.Short() {
		t.Skip("no chromium (apt-get install chromium), or -short")
	}
	const op = "browser-operator-token"
	c := testcluster.New(t, testcluster.Options{Core: 1, Token: op})
	ctx := ctxT(t)
	var ch api.Channel
	c.WaitFor(30*time.Second, func() error {
		var err error
		ch, err = c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "media", Replicas: 1})
		if err == nil && ch.Token == "" {
			return fmt.Errorf("no token in the create answer (cluster version not raised yet?)")
		}
		return err
	})
	c.WaitLeader("media")

	results := make(chan string, 1)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/result" {
			select {
			case results <- r.URL.Query().Get("m"):
			default:
			}
			return
		}
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, videoPage, c.Nodes[0].URL(), ch.Token, files)
	}))
	defer page.Close()
	client := api.NewClient(c.Nodes[0].URL(), ch.Token, nil)
	if _, err := client.SetChannelSettings(ctx, "media", api.ChannelSettings{CORS: &api.CORS{
		AllowedOrigins: []string{page.URL}, AllowedMethods: []string{"GET", "HEAD", "PUT", "POST"},
		AllowedHeaders: []string{"Authorization", "Content-Type"}, MaxAge: 60,
	}}); err != nil {
		t.Fatal(err)
	}

	bctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(bctx, bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--user-data-dir="+t.TempDir(), page.URL)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel() // kills the browser this test started
		_ = cmd.Wait()
	}()
	select {
	case m := <-results:
		if !strings.HasPrefix(m, "ok") {
			t.Fatalf("the page says %q\nchromium: %s", m, out.String())
		}
		t.Logf("the video played from a signed link: %s", m)
	case <-bctx.Done():
		t.Fatalf("no result from the page within 90s\nchromium: %s", out.String())
	}
	route := "/v1/channels/{ch}/kv/{key}"
	if files {
		route = "/v1/channels/{ch}/files/{path}"
	}
	series := `shardnet_http_requests_total{code="206",method="GET",route="` + route + `"}`
	n := testcluster.Metric(t, c.Nodes[0].URL(), op, series)
	if n < 1 {
		t.Fatalf("the video element got no 206 answer to a range request (%s = %v)", series, n)
	}
	t.Logf("range answers (206): %v", n)
}
