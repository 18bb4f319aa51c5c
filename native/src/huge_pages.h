// ggml's large CPU buffers on transparent huge pages (Linux).
#pragma once

/** Whether ggml's CPU buffers allocated from now on are backed by huge pages; false where unsupported. */
bool useHugePages(bool on);
