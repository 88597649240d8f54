// Placeholder until this page is written (issue 14).
"use strict";
