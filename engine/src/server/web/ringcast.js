// Placeholder: the browser client (browser-client branch) replaces this file.
"use strict";
